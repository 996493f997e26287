/*
 * tests/plugins/null_desc.c -- loader test: arb_plugin_descriptor() returns NULL (refused).
 */
#define PLUGIN_NAME "null_desc"
#define PLUGIN_NULL_DESC 1
#include "good.c"
