/*
 * tests/plugins/newer_minor.c -- loader test: a plugin built for ABI 1.1, newer than the host (refused).
 */
#define PLUGIN_NAME "newer_minor"
#define PLUGIN_ABI ((1u << 16) | 1u)
#include "good.c"
