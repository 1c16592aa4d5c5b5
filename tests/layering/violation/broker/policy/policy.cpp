// Fixture: the pure policy loading libraries (the check must refuse it).
#include <dlfcn.h>
