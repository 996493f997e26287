/*
 * tests/plugins/bad_major.c -- loader test: a plugin built for ABI 2.0 (refused: major mismatch).
 */
#define PLUGIN_NAME "bad_major"
#define PLUGIN_ABI ((2u << 16) | 0u)
#include "good.c"
