/*
 * tests/plugins/small_struct.c -- loader test: descriptor struct_size below the ABI 1.0 size (refused).
 */
#define PLUGIN_NAME "small_struct"
#define PLUGIN_SIZE (sizeof(arb_plugin) - 8)
#include "good.c"
