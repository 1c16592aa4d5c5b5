// Fixture: shim/ reaching into broker/ (the check must refuse it).
#include "broker/core/core.h"
