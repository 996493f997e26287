/*
 * core/host.c -- the host services table (struct arb_host, arb/plugin.h)
 * handed to every plugin instance of a model.
 *
 * Each component has its own table; host->core points at its arb_component
 * record (model_internal.h), which points at the model-wide arb_hostctx.
 *   log           stderr, "[instance] " prefix, level filter (ARB_LOG_LEVEL
 *                 environment variable, 0..3, default INFO)
 *   set_error     like ARB_FAIL without a source location
 *   model/backend the model's shape facts and compute backend
 *   conf_*        forward to arb_conf_* (config.c)
 *   tern_create   arb_registry_create with the name "<instance>.<name>"
 *   publish       named tensor table owned by the model: the descriptor is
 *                 copied, the data stays in the publisher's backend memory
 *   lookup        NULL when nothing of that name was published
 *   call_forward / call_backward   another component by instance name;
 *                 refused when the core itself runs that component at
 *                 io->layer (the call would overwrite the activations the
 *                 trunk's backward of that block needs)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_internal.h"

static arb_component *comp_of(const arb_host *h)
{
	return (arb_component *)h->core;
}

static const char *level_name(int level)
{
	switch (level) {
	case ARB_LOG_ERROR: return "error";
	case ARB_LOG_WARN: return "warning";
	case ARB_LOG_INFO: return "info";
	default: return "debug";
	}
}

static void host_log(const arb_host *h, int level, const char *fmt, ...)
	ARB_PRINTF(3, 4);
static void host_log(const arb_host *h, int level, const char *fmt, ...)
{
	arb_component *c = comp_of(h);
	if (c && c->ctx && level > c->ctx->log_level) return;
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	size_t n = strlen(line);
	while (n && line[n - 1] == '\n') line[--n] = 0;
	fprintf(stderr, "[%s] %s: %s\n", c ? c->instance : "?", level_name(level),
		line);
}

static int host_set_error(arb_error *err, int code, const char *fmt, ...)
	ARB_PRINTF(3, 4);
static int host_set_error(arb_error *err, int code, const char *fmt, ...)
{
	if (!err) return code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	err->code = code;
	err->file = "plugin";
	err->line = 0;
	return code;
}

static const arb_model_info *host_model(const arb_host *h)
{
	return &comp_of(h)->ctx->info;
}

static arb_backend *host_backend(const arb_host *h)
{
	return comp_of(h)->ctx->be;
}

static arb_status host_tern_create(const arb_host *h, const char *instance,
				   const char *name, int64_t rows, int64_t cols,
				   const arb_tern_param *p, arb_tern **out,
				   arb_error *err)
{
	arb_component *c = comp_of(h);
	if (!instance || !*instance) instance = c->instance;
	if (!name || !*name)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"[%s] tern_create: empty tensor name", instance);
	char full[64];
	int n = snprintf(full, sizeof full, "%s.%s", instance, name);
	if (n < 0 || (size_t)n >= sizeof full)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"[%s] tern_create: tensor name '%s.%s' longer than "
				"%zu characters", instance, instance, name,
				sizeof full - 1);
	if (rows <= 0 || cols <= 0)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"[%s] tern_create '%s': bad shape %lld x %lld",
				instance, full, (long long)rows, (long long)cols);
	arb_status s = arb_registry_create(c->ctx->reg, full, rows, cols, p, out,
					   err);
	return s;
}

static arb_status host_publish(const arb_host *h, const char *name,
			       const arb_named *t, arb_error *err)
{
	arb_hostctx *ctx = comp_of(h)->ctx;
	if (!name || !*name || strlen(name) >= sizeof ctx->named[0]->name)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"[%s] publish: empty or too long name",
				comp_of(h)->instance);
	if (!t)
		return ARB_FAIL(err, ARB_ERR_INVALID, "[%s] publish '%s': NULL tensor",
				comp_of(h)->instance, name);
	for (int i = 0; i < ctx->n_named; i++) {
		if (strcmp(ctx->named[i]->name, name) == 0) {
			ctx->named[i]->t = *t;
			return ARB_OK;
		}
	}
	if (ctx->n_named == ctx->cap_named) {
		int cap = ctx->cap_named ? 2 * ctx->cap_named : 8;
		arb_named_entry **nn = realloc(ctx->named, cap * sizeof *nn);
		if (!nn) return ARB_FAIL(err, ARB_ERR_NOMEM, "publish: out of memory");
		ctx->named = nn;
		ctx->cap_named = cap;
	}
	arb_named_entry *e = calloc(1, sizeof *e);
	if (!e) return ARB_FAIL(err, ARB_ERR_NOMEM, "publish: out of memory");
	snprintf(e->name, sizeof e->name, "%s", name);
	e->t = *t;
	ctx->named[ctx->n_named++] = e;
	return ARB_OK;
}

static const arb_named *host_lookup(const arb_host *h, const char *name)
{
	arb_hostctx *ctx = comp_of(h)->ctx;
	if (!name) return NULL;
	for (int i = 0; i < ctx->n_named; i++)
		if (strcmp(ctx->named[i]->name, name) == 0)
			return &ctx->named[i]->t;
	return NULL;
}

arb_component *arb_host_find(arb_hostctx *ctx, const char *instance)
{
	if (!instance) return NULL;
	for (int i = 0; i < ctx->n_comps; i++)
		if (ctx->comps[i]->self && strcmp(ctx->comps[i]->instance, instance) == 0)
			return ctx->comps[i];
	return NULL;
}

static arb_status host_call(const arb_host *h, const char *instance,
			    arb_io *io, int backward, arb_error *err)
{
	arb_component *me = comp_of(h);
	arb_component *c = arb_host_find(me->ctx, instance);
	if (!c)
		return ARB_FAIL(err, ARB_ERR_PLUGIN,
				"[%s] call_%s: no loaded component named '%s'",
				me->instance, backward ? "backward" : "forward",
				instance ? instance : "(null)");
	if (c == me)
		return ARB_FAIL(err, ARB_ERR_PLUGIN,
				"[%s] call_%s: a component cannot call itself",
				me->instance, backward ? "backward" : "forward");
	int at_layer = 0;
	if (c->placed && io) {
		if (c->slot == ARB_SLOT_INPUT) at_layer = io->layer == -1;
		for (int i = 0; i < c->n_layers; i++)
			at_layer |= c->layers[i] == io->layer;
	}
	if (at_layer)
		return ARB_FAIL(err, ARB_ERR_PLUGIN,
				"[%s] call_%s: component '%s' ([%s]) already runs in "
				"the trunk at block %d, where a call would overwrite "
				"the activations its own backward needs: give the "
				"caller an instance of its own (a section "
				"[%s:NAME] with trunk = false)", me->instance,
				backward ? "backward" : "forward", c->instance,
				c->section, io->layer, c->lp.desc->name);
	const arb_plugin *d = c->lp.desc;
	arb_status s = backward ? d->backward(c->self, io, err)
				: d->forward(c->self, io, err);
	return s;
}

static arb_status host_call_forward(const arb_host *h, const char *instance,
				    arb_io *io, arb_error *err)
{
	return host_call(h, instance, io, 0, err);
}

static arb_status host_call_backward(const arb_host *h, const char *instance,
				     arb_io *io, arb_error *err)
{
	return host_call(h, instance, io, 1, err);
}

void arb_host_setup(arb_hostctx *ctx, arb_component *c)
{
	arb_host *h = &c->host;
	memset(h, 0, sizeof *h);
	c->ctx = ctx;
	h->abi_version = ARB_ABI_VERSION;
	h->struct_size = sizeof *h;
	h->core = c;
	h->log = host_log;
	h->set_error = host_set_error;
	h->model = host_model;
	h->backend = host_backend;
	h->conf_int = arb_conf_int;
	h->conf_float = arb_conf_float;
	h->conf_bool = arb_conf_bool;
	h->conf_str = arb_conf_str;
	h->conf_int_list = arb_conf_int_list;
	h->tern_create = host_tern_create;
	h->publish = host_publish;
	h->lookup = host_lookup;
	h->call_forward = host_call_forward;
	h->call_backward = host_call_backward;
}

void arb_hostctx_free(arb_hostctx *ctx)
{
	for (int i = 0; i < ctx->n_named; i++) free(ctx->named[i]);
	free(ctx->named);
	ctx->named = NULL;
	ctx->n_named = ctx->cap_named = 0;
}
