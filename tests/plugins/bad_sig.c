/*
 * tests/plugins/bad_sig.c -- loader test: a plugin with a foreign build signature (refused).
 */
#define PLUGIN_NAME "bad_sig"
#define PLUGIN_SIG "ptr4;tern5r1;f16;abi1"
#include "good.c"
