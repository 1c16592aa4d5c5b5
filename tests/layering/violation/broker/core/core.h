// Fixture: broker/ reaching into hooks/ (the check must refuse it).
#include "../../hooks/hook.h"
