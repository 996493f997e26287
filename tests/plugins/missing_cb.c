/*
 * tests/plugins/missing_cb.c -- loader test: a plugin without the required backward callback (refused).
 */
#define PLUGIN_NAME "missing_cb"
#define PLUGIN_NO_BACKWARD 1
#include "good.c"
