/*
 * tests/plugins/newer_minor.c -- loader test: a plugin built for the ABI minor after the host's (refused).
 */
#define PLUGIN_NAME "newer_minor"
#define PLUGIN_ABI ((1u << 16) | (ARB_ABI_MINOR + 1u))
#include "good.c"
