/*
 * tests/plugins/no_symbol.c -- loader test: exports no arb_plugin_descriptor symbol (refused).
 */
#define PLUGIN_NAME "no_symbol"
#define PLUGIN_NO_SYMBOL 1
#include "good.c"
