/*
 * tests/plugins/good.c -- a small valid plugin for the loader tests, and
 * the base of the refused variants (each tests/plugins/<x>.c defines what
 * it breaks, then includes this file).
 *
 * Schema: level (int in [1, 100], default 10), mode (enum fast|exact,
 * default fast), name (string, required). FFN slot. create() fails with a
 * message when level == GOOD_MAGIC_LEVEL (13); forward/backward do nothing
 * (the loader tests never run them).
 */
#include <stdlib.h>
#include <string.h>
#include "arb/plugin.h"

#ifndef PLUGIN_NAME
#define PLUGIN_NAME "good"
#endif
#ifndef PLUGIN_ABI
#define PLUGIN_ABI ARB_ABI_VERSION
#endif
#ifndef PLUGIN_SIG
#define PLUGIN_SIG ARB_BUILD_SIGNATURE
#endif
#ifndef PLUGIN_EXTRA          /* bytes appended to the descriptor */
#define PLUGIN_EXTRA 0
#endif
#ifndef PLUGIN_SIZE
#define PLUGIN_SIZE (sizeof(arb_plugin) + PLUGIN_EXTRA)
#endif
#ifndef PLUGIN_BAD_TYPE       /* schema entry type for `mode` */
#define PLUGIN_MODE_TYPE ARB_CONF_ENUM
#else
#define PLUGIN_MODE_TYPE 42
#endif
#define GOOD_MAGIC_LEVEL 13

typedef struct good {
	int64_t level;
	int exact;
	char name[64];
} good;

static const arb_conf_key good_schema[] = {
	{ "level", ARB_CONF_INT, "10", 1, 100, NULL, "how much (test key with a range)" },
	{ "mode", PLUGIN_MODE_TYPE, "fast", 0, 0, "fast|exact", "test enum" },
	{ "name", ARB_CONF_STRING, NULL, 0, 0, NULL, "required test string" },
	ARB_CONF_END
};

static arb_status good_create(const arb_host *host, const arb_conf *conf,
			      const char *instance, void **self, arb_error *err)
{
	int64_t level = host->conf_int(conf, "level");
	if (level == GOOD_MAGIC_LEVEL)
		return host->set_error(err, ARB_ERR_PLUGIN, "good[%s]: level %d "
				       "is refused on purpose (test of the "
				       "create failure path)", instance,
				       GOOD_MAGIC_LEVEL);
	good *g = calloc(1, sizeof *g);
	if (!g) return host->set_error(err, ARB_ERR_NOMEM, "good: out of memory");
	g->level = level;
	g->exact = strcmp(host->conf_str(conf, "mode"), "exact") == 0;
	strncpy(g->name, host->conf_str(conf, "name"), sizeof g->name - 1);
	*self = g;
	return ARB_OK;
}

static void good_destroy(void *self)
{
	free(self);
}

static arb_status good_forward(void *self, arb_io *io, arb_error *err)
{
	return ARB_OK;
}

#ifndef PLUGIN_NO_BACKWARD
static arb_status good_backward(void *self, arb_io *io, arb_error *err)
{
	return ARB_OK;
}
#endif

static const struct {
	arb_plugin p;
	char extra[PLUGIN_EXTRA + 1];
} good_desc = { {
	.abi_version = PLUGIN_ABI,
	.struct_size = (uint32_t)(PLUGIN_SIZE),
	.build_sig = PLUGIN_SIG,
	.name = PLUGIN_NAME,
	.version = "0.1.0",
	.description = "test plugin: " PLUGIN_NAME,
	.license = "MIT",
	.slot = ARB_SLOT_FFN,
	.schema = good_schema,
	.create = good_create,
	.destroy = good_destroy,
	.forward = good_forward,
#ifndef PLUGIN_NO_BACKWARD
	.backward = good_backward,
#endif
}, { 0 } };

#if defined(PLUGIN_NO_SYMBOL)
/* exports a descriptor under another name only */
ARB_EXPORT const arb_plugin *arb_plugin_descriptor_v2(void);
ARB_EXPORT const arb_plugin *arb_plugin_descriptor_v2(void) { return &good_desc.p; }
#elif defined(PLUGIN_NULL_DESC)
ARB_EXPORT const arb_plugin *arb_plugin_descriptor(void);
ARB_EXPORT const arb_plugin *arb_plugin_descriptor(void) { return NULL; }
#else
ARB_PLUGIN_DEFINE(good_desc.p)
#endif
