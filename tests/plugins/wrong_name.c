/*
 * tests/plugins/wrong_name.c -- loader test: the file wrong_name.so calls itself 'good' (refused).
 */
#define PLUGIN_NAME "good"
#include "good.c"
