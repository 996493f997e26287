/*
 * tests/plugins/big_struct.c -- loader test: descriptor 64 bytes larger than the host knows (refused).
 */
#define PLUGIN_NAME "big_struct"
#define PLUGIN_EXTRA 64
#include "good.c"
