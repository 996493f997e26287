/*
 * tests/plugins/bad_schema.c -- loader test: a schema entry with an unknown type (refused).
 */
#define PLUGIN_NAME "bad_schema"
#define PLUGIN_BAD_TYPE 1
#include "good.c"
