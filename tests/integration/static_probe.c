/* A statically linked program: what gpushare-doctor must flag as out of LD_PRELOAD's reach. */
int main(void) { return 0; }
