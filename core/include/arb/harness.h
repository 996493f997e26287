/*
 * arb/harness.h -- a test harness for plugin authors (header-only, static
 * inline C11; link -ldl -lm). It runs one component outside the arbcore
 * program, on any struct arb_backend:
 *
 *   a tiny test host (arb_harness): the struct arb_host a plugin's create()
 *     receives, with tern_create over be->tern_alloc / be->tern_init (T_accum
 *     init half-width H->accum_init, 0 unless set), named tensor
 *     publish/lookup, and conf_* accessors over the schema's defaults plus
 *     key=value overrides (arb_harness_set, arb_harness_setf);
 *   arb_harness_fd_check: the component's backward against central finite
 *     differences, for the input (dx) and for every weight it votes on
 *     (dW, recorded from linear_vote / embed_vote);
 *   arb_harness_compare: one component on two backends (CPU vs CUDA), same
 *     inputs, outputs and input gradients within a tolerance;
 *   arb_harness_step: the ternary step (be->tern_step_many) of every tensor the
 *     component created, as the core's scheduler would apply it.
 *
 * The backends themselves come from libarbcore (arb_backend_cpu(),
 * arb_backend_cuda()): a test program links it through
 * `pkg-config --libs arbcore-harness`. The plugin under test is either
 * loaded from its .so (arb_harness_open: the real artifact, its one exported
 * symbol) or linked in (arb_harness_use). Plugins themselves never include
 * this header.
 *
 * Weight finite differences, for a weight w[n][k] of a tensor the component
 * runs through be->linear_forward: the harness hands the component a wrapped
 * backend whose linear_forward adds delta * x[:, k] into y[:, n] after the
 * real op when called on that tensor (exactly y = x (W + delta e_n e_k^T)^T),
 * and whose linear_vote / embed_vote record the dense dW = dy^T x (or the
 * table's summed rows) instead of voting. Loss L = sum(R * y) for a fixed
 * random R (dy = R); relative error |a - f| / max(|a|, |f|, floor), floor =
 * 1e-3 * the largest |gradient| of that kind.
 *
 * Slots: FFN and INPUT components add into a separate y; RESIDUAL
 * components run in place (y == x, dx == dy), so L = sum(R * (x + f(x))).
 */
#ifndef ARB_HARNESS_H
#define ARB_HARNESS_H

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ARB_H_MAX_KEYS 64
#define ARB_H_MAX_TERNS 256
#define ARB_H_MAX_NAMED 64

/* one key of the component's section: schema entry + value text */
typedef struct arb_hconf {
	const arb_conf_key *schema;
	int n;
	char val[ARB_H_MAX_KEYS][1024];
	int set[ARB_H_MAX_KEYS];
	char section[64];
} arb_hconf;

typedef struct arb_harness {
	arb_host host;            /* handed to the component's create() */
	arb_backend wrap;         /* be with the FD hooks (what the component sees) */
	arb_backend *be;          /* the real backend */
	arb_model_info info;
	double zero_frac;         /* default init zero fraction (1/3) */
	int accum_init;           /* half-width of the random T_accum init of
				     the tensors tern_create makes (0; frozen
				     tensors always 0, as in the core) */
	int verbose;              /* host->log prints up to this level */
	arb_hconf conf;
	arb_tern *tern[ARB_H_MAX_TERNS];
	int n_tern;
	char named_name[ARB_H_MAX_NAMED][64];
	arb_named named[ARB_H_MAX_NAMED];
	int n_named;
	void *dl;
	const arb_plugin *desc;
	void *self;
	char instance[64];
	/* FD hooks */
	const arb_tern *fd_w;     /* tensor perturbed in linear/embed forward */
	int64_t fd_n, fd_k;
	double fd_delta;
	int recording;            /* 1: record dW from votes (and do not vote) */
	double *dW[ARB_H_MAX_TERNS]; /* host, rows*cols, per tensor */
} arb_harness;

/* ---------------------------------------------------------------------------
 * conf accessors (the schema's defaults, overridden by arb_harness_set) */
static inline int arb_h__key(const arb_conf *c, const char *key, int type_a,
			     int type_b, const char *fn)
{
	const arb_hconf *hc = (const arb_hconf *)c;
	for (int i = 0; hc && i < hc->n; i++) {
		if (strcmp(hc->schema[i].key, key)) continue;
		int t = hc->schema[i].type;
		if (type_a && t != type_a && t != type_b) break;
		return i;
	}
	fprintf(stderr, "harness: %s(\"%s\"): no such key of that type in [%s]\n",
		fn, key, hc ? hc->section : "?");
	abort();
}

static inline int64_t arb_h__conf_int(const arb_conf *c, const char *key)
{
	const arb_hconf *hc = (const arb_hconf *)c;
	int i = arb_h__key(c, key, 0, 0, "conf_int");
	const char *v = hc->val[i];
	switch (hc->schema[i].type) {
	case ARB_CONF_BOOL:
		return !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") ||
		       !strcmp(v, "on");
	case ARB_CONF_ENUM: {
		const char *ch = hc->schema[i].choices;
		size_t n = strlen(v);
		for (int64_t k = 0; ch && *ch; k++) {
			const char *e = strchr(ch, '|');
			size_t len = e ? (size_t)(e - ch) : strlen(ch);
			if (len == n && !strncmp(ch, v, n)) return k;
			ch = e ? e + 1 : ch + len;
		}
		return -1;
	}
	default:
		return strtoll(v, NULL, 10);
	}
}
static inline double arb_h__conf_float(const arb_conf *c, const char *key)
{
	const arb_hconf *hc = (const arb_hconf *)c;
	return strtod(hc->val[arb_h__key(c, key, ARB_CONF_FLOAT, ARB_CONF_INT,
					 "conf_float")], NULL);
}
static inline int arb_h__conf_bool(const arb_conf *c, const char *key)
{
	arb_h__key(c, key, ARB_CONF_BOOL, ARB_CONF_BOOL, "conf_bool");
	return (int)arb_h__conf_int(c, key);
}
static inline const char *arb_h__conf_str(const arb_conf *c, const char *key)
{
	const arb_hconf *hc = (const arb_hconf *)c;
	return hc->val[arb_h__key(c, key, 0, 0, "conf_str")];
}
static inline int arb_h__conf_int_list(const arb_conf *c, const char *key,
				       int64_t *out, int max)
{
	const arb_hconf *hc = (const arb_hconf *)c;
	const char *p = hc->val[arb_h__key(c, key, ARB_CONF_INT_LIST,
					   ARB_CONF_INT_LIST, "conf_int_list")];
	int n = 0;
	while (*p) {
		char *e;
		long long v = strtoll(p, &e, 10);
		if (e == p) { p++; continue; }
		if (out && n < max) out[n] = v;
		n++;
		p = e;
	}
	return out && n > max ? max : n;
}

/* ---------------------------------------------------------------------------
 * host services */
static inline arb_harness *arb_h__of(const arb_host *h)
{
	return (arb_harness *)h->core;
}

static inline void arb_h__log(const arb_host *h, int level, const char *fmt, ...)
	ARB_PRINTF(3, 4);
static inline void arb_h__log(const arb_host *h, int level, const char *fmt, ...)
{
	arb_harness *H = arb_h__of(h);
	if (level > H->verbose) return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "[%s] ", H->instance);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static inline int arb_h__set_error(arb_error *err, int code, const char *fmt, ...)
	ARB_PRINTF(3, 4);
static inline int arb_h__set_error(arb_error *err, int code, const char *fmt, ...)
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

static inline const arb_model_info *arb_h__model(const arb_host *h)
{
	return &arb_h__of(h)->info;
}
static inline arb_backend *arb_h__backend(const arb_host *h)
{
	return &arb_h__of(h)->wrap;
}

/* E0 = round(log2(1 / sqrt(fan_in * (1 - zero_frac)))) (arb/tensor.h) */
static inline int arb_h__e_init(int64_t fan_in, double zf)
{
	double live = (double)fan_in * (1.0 - zf);
	if (!(live > 0.0)) return 0;
	double e = nearbyint(-0.5 * log2(live));
	return e < -126 ? -126 : e > 127 ? 127 : (int)e;
}

static inline arb_status arb_h__tern_create(const arb_host *h,
					    const char *instance,
					    const char *name, int64_t rows,
					    int64_t cols, const arb_tern_param *p,
					    arb_tern **out, arb_error *err)
{
	arb_harness *H = arb_h__of(h);
	arb_tern_param def = { sizeof def, 0, 0, 0, -1.0, 0, 0 };
	if (!p) p = &def;
	if (!instance || !*instance) instance = H->instance;
	if (H->n_tern == ARB_H_MAX_TERNS)
		return (arb_status)arb_h__set_error(err, ARB_ERR_NOMEM, "harness: too many tensors");
	if (!name || !*name || rows < 1 || cols < 1)
		return (arb_status)arb_h__set_error(err, ARB_ERR_INVALID,
					"harness: tern_create: bad name or shape");
	arb_tern *t = (arb_tern *)calloc(1, sizeof *t);
	if (!t) return (arb_status)arb_h__set_error(err, ARB_ERR_NOMEM, "harness: out of memory");
	int n = snprintf(t->name, sizeof t->name, "%s.%s", instance, name);
	for (int i = 0; i < H->n_tern; i++)
		if (!strcmp(H->tern[i]->name, t->name)) n = -1;
	if (n < 0 || (size_t)n >= sizeof t->name) {
		free(t);
		return (arb_status)arb_h__set_error(err, ARB_ERR_INVALID,
					"harness: tensor '%s.%s': duplicate or too "
					"long name", instance, name);
	}
	int32_t gs = p->group_size ? p->group_size : H->info.group_size;
	double zf = p->zero_frac < 0 ? H->zero_frac : p->zero_frac;
	if (gs < ARB_GROUP_MIN || gs > ARB_GROUP_MAX || !(zf >= 0 && zf <= 1)) {
		free(t);
		return (arb_status)arb_h__set_error(err, ARB_ERR_INVALID,
					"harness: tensor '%s.%s': group_size %d or "
					"zero_frac %g out of range", instance, name,
					gs, zf);
	}
	t->rows = rows;
	t->cols = cols;
	t->group_size = gs;
	t->groups = arb_groups(cols, gs);
	t->row_bytes = arb_row_bytes(cols);
	t->flags = (p->frozen ? ARB_TERN_FROZEN : 0u) |
		   (p->sparse ? ARB_TERN_SPARSE : 0u) |
		   (H->be->is_device ? ARB_TERN_DEVICE : 0u);
	t->id = (uint32_t)H->n_tern;
	t->erule = ARB_ERULE_FROZEN;
	arb_status st = H->be->tern_alloc(H->be, t, err);
	if (st) { free(t); return st; }
	arb_tern_init ini;
	memset(&ini, 0, sizeof ini);
	ini.seed = H->info.seed;
	ini.zero_frac = zf;
	ini.const_trit = p->const_trit;
	/* zero_frac = 1: all trits 0, E0 of the default density (as the core) */
	ini.e_init = arb_h__e_init(p->fan_in ? p->fan_in : cols,
				   zf >= 1.0 ? H->zero_frac : zf);
	ini.accum_init = p->frozen ? 0 : H->accum_init;
	H->be->tern_init(H->be, t, &ini);
	H->tern[H->n_tern++] = t;
	*out = t;
	return ARB_OK;
}

static inline arb_status arb_h__publish(const arb_host *h, const char *name,
					const arb_named *t, arb_error *err)
{
	arb_harness *H = arb_h__of(h);
	if (!name || !t || strlen(name) >= 64)
		return (arb_status)arb_h__set_error(err, ARB_ERR_INVALID, "harness: publish: bad name");
	int i = 0;
	while (i < H->n_named && strcmp(H->named_name[i], name)) i++;
	if (i == ARB_H_MAX_NAMED)
		return (arb_status)arb_h__set_error(err, ARB_ERR_NOMEM, "harness: too many named");
	if (i == H->n_named) {
		strcpy(H->named_name[i], name);
		H->n_named++;
	}
	H->named[i] = *t;
	return ARB_OK;
}
static inline const arb_named *arb_h__lookup(const arb_host *h, const char *name)
{
	arb_harness *H = arb_h__of(h);
	for (int i = 0; name && i < H->n_named; i++)
		if (!strcmp(H->named_name[i], name)) return &H->named[i];
	return NULL;
}
static inline arb_status arb_h__call(const arb_host *h, const char *instance,
				     arb_io *io, arb_error *err)
{
	(void)h;
	(void)io;
	return (arb_status)arb_h__set_error(err, ARB_ERR_UNSUPPORTED,
				"harness: call_forward/call_backward('%s'): the "
				"test host runs a single component", instance);
}

/* ---------------------------------------------------------------------------
 * the wrapped backend (FD hooks); everything else passes through */
static inline arb_harness *arb_h__ofbe(arb_backend *be)
{
	return (arb_harness *)((char *)be - offsetof(arb_harness, wrap));
}
static inline int arb_h__index(arb_harness *H, const arb_tern *w)
{
	for (int i = 0; i < H->n_tern; i++)
		if (H->tern[i] == w) return i;
	return -1;
}
static inline float *arb_h__down(arb_backend *be, const void *p, size_t bytes)
{
	float *h = (float *)malloc(bytes ? bytes : 1);
	if (h) be->download(be, h, p, bytes);
	return h;
}

static inline void arb_h__linear_forward(arb_backend *be, const arb_tern *w,
					 const float *x, float *y, int64_t M,
					 int accumulate)
{
	arb_harness *H = arb_h__ofbe(be);
	H->be->linear_forward(H->be, w, x, y, M, accumulate);
	if (w != H->fd_w || H->fd_delta == 0.0) return;
	int64_t N = w->rows, K = w->cols;
	float *hx = arb_h__down(H->be, x, (size_t)(M * K) * sizeof(float));
	float *hy = arb_h__down(H->be, y, (size_t)(M * N) * sizeof(float));
	if (!hx || !hy) abort();
	for (int64_t m = 0; m < M; m++)
		hy[m * N + H->fd_n] += (float)(H->fd_delta * hx[m * K + H->fd_k]);
	H->be->upload(H->be, y, hy, (size_t)(M * N) * sizeof(float));
	free(hx);
	free(hy);
}

static inline void arb_h__linear_vote(arb_backend *be, arb_tern *w,
				      const float *x, const float *dy, int64_t M,
				      const arb_vote *v)
{
	arb_harness *H = arb_h__ofbe(be);
	int i = arb_h__index(H, w);
	if (!H->recording || i < 0) {
		H->be->linear_vote(H->be, w, x, dy, M, v);
		return;
	}
	int64_t N = w->rows, K = w->cols;
	float *hx = arb_h__down(H->be, x, (size_t)(M * K) * sizeof(float));
	float *hd = arb_h__down(H->be, dy, (size_t)(M * N) * sizeof(float));
	if (!hx || !hd) abort();
	for (int64_t m = 0; m < M; m++)
		for (int64_t n = 0; n < N; n++) {
			double g = hd[m * N + n];
			if (g == 0.0) continue;
			for (int64_t k = 0; k < K; k++)
				H->dW[i][n * K + k] += g * hx[m * K + k];
		}
	free(hx);
	free(hd);
}

static inline void arb_h__embed_forward(arb_backend *be, const arb_tern *w,
					const int32_t *idx, int64_t n, float *out,
					int accumulate)
{
	arb_harness *H = arb_h__ofbe(be);
	H->be->embed_forward(H->be, w, idx, n, out, accumulate);
	if (w != H->fd_w || H->fd_delta == 0.0) return;
	int64_t D = w->cols;
	int32_t *hi = (int32_t *)malloc((size_t)n * sizeof *hi);
	float *ho = arb_h__down(H->be, out, (size_t)(n * D) * sizeof(float));
	if (!hi || !ho) abort();
	H->be->download(H->be, hi, idx, (size_t)n * sizeof *hi);
	for (int64_t p = 0; p < n; p++)
		if (hi[p] == H->fd_n) ho[p * D + H->fd_k] += (float)H->fd_delta;
	H->be->upload(H->be, out, ho, (size_t)(n * D) * sizeof(float));
	free(hi);
	free(ho);
}

static inline void arb_h__embed_vote(arb_backend *be, arb_tern *w,
				     const int32_t *idx, int64_t n,
				     const float *dout, const arb_vote *v)
{
	arb_harness *H = arb_h__ofbe(be);
	int i = arb_h__index(H, w);
	if (!H->recording || i < 0) {
		H->be->embed_vote(H->be, w, idx, n, dout, v);
		return;
	}
	int64_t D = w->cols;
	int32_t *hi = (int32_t *)malloc((size_t)n * sizeof *hi);
	float *hd = arb_h__down(H->be, dout, (size_t)(n * D) * sizeof(float));
	if (!hi || !hd) abort();
	H->be->download(H->be, hi, idx, (size_t)n * sizeof *hi);
	for (int64_t p = 0; p < n; p++)
		for (int64_t d = 0; d < D; d++)
			H->dW[i][(int64_t)hi[p] * D + d] += hd[p * D + d];
	free(hi);
	free(hd);
}

/* ---------------------------------------------------------------------------
 * set-up and tear-down */

/* info may be NULL: D 32, 2 layers, 2 heads, ctx 8, batch 2, group 16, seed 1 */
static inline void arb_harness_init(arb_harness *H, arb_backend *be,
				    const arb_model_info *info)
{
	memset(H, 0, sizeof *H);
	H->be = be;
	H->wrap = *be;
	H->wrap.linear_forward = arb_h__linear_forward;
	H->wrap.linear_vote = arb_h__linear_vote;
	H->wrap.embed_forward = arb_h__embed_forward;
	H->wrap.embed_vote = arb_h__embed_vote;
	if (info) {
		H->info = *info;
	} else {
		H->info.d_model = 32;
		H->info.n_layers = 2;
		H->info.n_heads = 2;
		H->info.ctx = 8;
		H->info.batch = 2;
		H->info.group_size = 16;
		H->info.seed = 1;
	}
	H->info.struct_size = sizeof H->info;
	H->zero_frac = 1.0 / 3.0;
	H->verbose = ARB_LOG_WARN;
	arb_host *h = &H->host;
	h->abi_version = ARB_ABI_VERSION;
	h->struct_size = sizeof *h;
	h->core = H;
	h->log = arb_h__log;
	h->set_error = arb_h__set_error;
	h->model = arb_h__model;
	h->backend = arb_h__backend;
	h->conf_int = arb_h__conf_int;
	h->conf_float = arb_h__conf_float;
	h->conf_bool = arb_h__conf_bool;
	h->conf_str = arb_h__conf_str;
	h->conf_int_list = arb_h__conf_int_list;
	h->tern_create = arb_h__tern_create;
	h->publish = arb_h__publish;
	h->lookup = arb_h__lookup;
	h->call_forward = arb_h__call;
	h->call_backward = arb_h__call;
}

/* the component under test, linked into the test program */
static inline void arb_harness_use(arb_harness *H, const arb_plugin *desc)
{
	H->desc = desc;
}

/* the component under test, from its shared object (the real artifact):
 * dlopen, descriptor, ABI major / minor / build signature checks */
static inline arb_status arb_harness_open(arb_harness *H, const char *path,
					  arb_error *err)
{
	H->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!H->dl)
		return (arb_status)arb_h__set_error(err, ARB_ERR_PLUGIN, "harness: dlopen %s: %s",
					path, dlerror());
	arb_plugin_descriptor_fn fn;
	void *sym = dlsym(H->dl, ARB_PLUGIN_SYMBOL);
	memcpy(&fn, &sym, sizeof fn);
	const arb_plugin *d = sym ? fn() : NULL;
	if (!d || ARB_ABI_MAJOR_OF(d->abi_version) != ARB_ABI_MAJOR ||
	    ARB_ABI_MINOR_OF(d->abi_version) > ARB_ABI_MINOR || !d->build_sig ||
	    strcmp(d->build_sig, ARB_BUILD_SIGNATURE) || !d->create ||
	    !d->destroy || !d->forward || !d->backward)
		return (arb_status)arb_h__set_error(err, ARB_ERR_PLUGIN,
					"harness: %s: no valid descriptor for ABI "
					"%d.%d / '%s'", path, ARB_ABI_MAJOR,
					ARB_ABI_MINOR, ARB_BUILD_SIGNATURE);
	H->desc = d;
	return ARB_OK;
}

/* override one key of the component's section (before create) */
static inline arb_status arb_harness_set(arb_harness *H, const char *key,
					 const char *value, arb_error *err)
{
	const arb_conf_key *s = H->desc ? H->desc->schema : NULL;
	for (int i = 0; s && s[i].key && i < ARB_H_MAX_KEYS; i++) {
		if (strcmp(s[i].key, key)) continue;
		snprintf(H->conf.val[i], sizeof H->conf.val[i], "%s", value);
		H->conf.set[i] = 1;
		return ARB_OK;
	}
	return (arb_status)arb_h__set_error(err, ARB_ERR_CONFIG, "harness: unknown key '%s'", key);
}

/* arb_harness_set with the value printed from fmt: ("rank", err, "%d", 4) */
static inline arb_status arb_harness_setf(arb_harness *H, const char *key,
					  arb_error *err, const char *fmt, ...)
	ARB_PRINTF(4, 5);
static inline arb_status arb_harness_setf(arb_harness *H, const char *key,
					  arb_error *err, const char *fmt, ...)
{
	char v[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v, sizeof v, fmt, ap);
	va_end(ap);
	return arb_harness_set(H, key, v, err);
}

/* create the instance: defaults from the schema, overrides, required keys */
static inline arb_status arb_harness_create(arb_harness *H, const char *instance,
					    arb_error *err)
{
	if (!H->desc)
		return (arb_status)arb_h__set_error(err, ARB_ERR_PLUGIN, "harness: no component");
	snprintf(H->instance, sizeof H->instance, "%s",
		 instance ? instance : H->desc->name);
	snprintf(H->conf.section, sizeof H->conf.section, "%s", H->desc->name);
	H->conf.schema = H->desc->schema;
	H->conf.n = 0;
	for (int i = 0; H->conf.schema && H->conf.schema[i].key; i++) {
		if (i == ARB_H_MAX_KEYS)
			return (arb_status)arb_h__set_error(err, ARB_ERR_CONFIG,
						"harness: schema too long");
		const arb_conf_key *k = &H->conf.schema[i];
		if (!H->conf.set[i]) {
			if (!k->def)
				return (arb_status)arb_h__set_error(err, ARB_ERR_CONFIG,
							"harness: [%s] %s: required "
							"key (arb_harness_set)",
							H->conf.section, k->key);
			snprintf(H->conf.val[i], sizeof H->conf.val[i], "%s", k->def);
		}
		H->conf.n = i + 1;
	}
	return H->desc->create(&H->host, (const arb_conf *)&H->conf, H->instance,
			       &H->self, err);
}

static inline void arb_harness_free(arb_harness *H)
{
	if (H->desc && H->self) H->desc->destroy(H->self);
	H->self = NULL;
	for (int i = 0; i < H->n_tern; i++) {
		H->be->tern_free(H->be, H->tern[i]);
		free(H->tern[i]);
		free(H->dW[i]);
	}
	H->n_tern = 0;
	if (H->dl) dlclose(H->dl);
	H->dl = NULL;
}

/* the tensor created as "<instance>.<name>", or NULL */
static inline arb_tern *arb_harness_tern(arb_harness *H, const char *name)
{
	for (int i = 0; i < H->n_tern; i++) {
		const char *n = H->tern[i]->name;
		size_t li = strlen(H->instance);
		if (!strcmp(n, name) || (!strncmp(n, H->instance, li) && n[li] == '.' &&
					 !strcmp(n + li + 1, name)))
			return H->tern[i];
	}
	return NULL;
}

/* the ternary step of every tensor created so far, frozen ones excepted, on
 * the real backend (p as the core's scheduler would build it); total (may be
 * NULL) = the sum of the tensors' stats */
static inline void arb_harness_step(arb_harness *H, const arb_step *p,
				    arb_step_stats *total)
{
	arb_step_stats sum;
	memset(&sum, 0, sizeof sum);
	int n = H->n_tern > 0 ? H->n_tern : 1;
	arb_tern **w = (arb_tern **)malloc((size_t)n * sizeof *w);
	arb_step *ps = (arb_step *)malloc((size_t)n * sizeof *ps);
	arb_step_stats *st = (arb_step_stats *)calloc((size_t)n, sizeof *st);
	int k = 0;
	for (int i = 0; i < H->n_tern; i++) {
		arb_tern *x = H->tern[i];
		if (x->flags & ARB_TERN_FROZEN) continue;
		if (w && ps && st && H->be->tern_step_many) {
			/* one batch: one device wait on CUDA */
			w[k] = x;
			ps[k++] = *p;
			continue;
		}
		arb_step_stats s1;
		memset(&s1, 0, sizeof s1);
		H->be->tern_step(H->be, x, p, &s1);
		sum.flips += s1.flips;
		sum.candidates += s1.candidates;
		sum.saturated += s1.saturated;
		sum.capped += s1.capped;
		sum.e_changes += s1.e_changes;
		sum.zeros += s1.zeros;
	}
	if (k) H->be->tern_step_many(H->be, w, ps, k, st);
	for (int i = 0; i < k; i++) {
		sum.flips += st[i].flips;
		sum.candidates += st[i].candidates;
		sum.saturated += st[i].saturated;
		sum.capped += st[i].capped;
		sum.e_changes += st[i].e_changes;
		sum.zeros += st[i].zeros;
	}
	free(w);
	free(ps);
	free(st);
	if (total) *total = sum;
}

/* ---------------------------------------------------------------------------
 * running the component on host arrays */

/* deterministic uniform in [-1, 1) */
static inline float arb_harness_rand(uint64_t seed, uint64_t i)
{
	return 2.0f * arb_rng_unit(seed, 0x4841524eull, i) - 1.0f;
}

typedef struct arb_harness_buf {
	float *x, *y, *dy, *dx; /* backend memory, [M, D] */
	int32_t *bytes;         /* backend memory, [B, 3T] */
	int B, T, D;
	int64_t M;
	arb_vote vote;
} arb_harness_buf;

static inline arb_status arb_h__buf(arb_harness *H, arb_harness_buf *b, int B,
				    int T, uint64_t seed, arb_error *err)
{
	arb_backend *be = H->be;
	memset(b, 0, sizeof *b);
	b->B = B;
	b->T = T;
	b->D = H->info.d_model;
	b->M = (int64_t)B * T;
	size_t md = (size_t)(b->M * b->D) * sizeof(float);
	b->x = (float *)be->alloc(be, md);
	b->y = (float *)be->alloc(be, md);
	b->dy = (float *)be->alloc(be, md);
	b->dx = (float *)be->alloc(be, md);
	b->bytes = (int32_t *)be->alloc(be, (size_t)B * 3 * T * sizeof(int32_t));
	if (!b->x || !b->y || !b->dy || !b->dx || !b->bytes)
		return (arb_status)arb_h__set_error(err, ARB_ERR_NOMEM, "harness: out of %s memory",
					be->name);
	int32_t *hb = (int32_t *)malloc((size_t)B * 3 * T * sizeof *hb);
	if (!hb) return (arb_status)arb_h__set_error(err, ARB_ERR_NOMEM, "harness: out of memory");
	for (int64_t i = 0; i < (int64_t)B * 3 * T; i++)
		hb[i] = (int32_t)(arb_rng_u32(seed, 77, (uint64_t)i) & 255u);
	be->upload(be, b->bytes, hb, (size_t)B * 3 * T * sizeof *hb);
	free(hb);
	b->vote.kind = ARB_VOTE_SIGN;
	b->vote.step = 1;
	b->vote.sr_R = 1;
	b->vote.seed = seed;
	b->vote.t = 1;
	return ARB_OK;
}

static inline void arb_h__buf_free(arb_harness *H, arb_harness_buf *b)
{
	arb_backend *be = H->be;
	be->free(be, b->x);
	be->free(be, b->y);
	be->free(be, b->dy);
	be->free(be, b->dx);
	be->free(be, b->bytes);
}

static inline void arb_h__io(arb_harness *H, arb_harness_buf *b, arb_io *io,
			     int layer, int training)
{
	memset(io, 0, sizeof *io);
	io->struct_size = sizeof *io;
	io->be = &H->wrap;
	io->B = b->B;
	io->T = b->T;
	io->D = b->D;
	io->layer = H->desc->slot == ARB_SLOT_INPUT ? -1 : layer;
	io->training = training;
	io->bytes = b->bytes;
	io->vote = &b->vote;
}

/* forward with x (host [M, D]); y_out (host [M, D]) = what the component
 * produced (FFN/INPUT: y starting from 0; RESIDUAL: x + f(x)) */
static inline arb_status arb_harness_forward(arb_harness *H, arb_harness_buf *b,
					     const float *x, float *y_out,
					     int layer, int training,
					     arb_error *err)
{
	arb_backend *be = H->be;
	size_t md = (size_t)(b->M * b->D) * sizeof(float);
	arb_io io;
	arb_h__io(H, b, &io, layer, training);
	be->upload(be, b->x, x, md);
	if (H->desc->slot == ARB_SLOT_RESIDUAL) {
		io.x = b->x;
		io.y = b->x;
	} else {
		be->zero(be, b->y, md);
		io.x = b->x;
		io.y = b->y;
	}
	arb_status st = H->desc->forward(H->self, &io, err);
	if (st) return st;
	be->download(be, y_out, io.y, md);
	return ARB_OK;
}

/* backward after a training forward: dy (host), dx_out (host) = the input
 * gradient (FFN/INPUT: dx starting from 0; RESIDUAL: dy + J^T dy) */
static inline arb_status arb_harness_backward(arb_harness *H,
					      arb_harness_buf *b, const float *dy,
					      float *dx_out, int layer,
					      arb_error *err)
{
	arb_backend *be = H->be;
	size_t md = (size_t)(b->M * b->D) * sizeof(float);
	arb_io io;
	arb_h__io(H, b, &io, layer, 1);
	io.x = b->x;
	be->upload(be, b->dy, dy, md);
	if (H->desc->slot == ARB_SLOT_RESIDUAL) {
		io.dy = b->dy;
		io.dx = b->dy;
	} else {
		be->zero(be, b->dx, md);
		io.dy = b->dy;
		io.dx = b->dx;
	}
	arb_status st = H->desc->backward(H->self, &io, err);
	if (st) return st;
	be->download(be, dx_out, io.dx, md);
	return ARB_OK;
}

/* ---------------------------------------------------------------------------
 * finite-difference check */
typedef struct arb_harness_fd_opts {
	int B, T;            /* 0: 2 and info.ctx */
	int layer;           /* io->layer of the calls */
	double eps_x;        /* input step (0: 1e-2) */
	double eps_w;        /* weight step (0: 1e-2) */
	int probes_x;        /* input entries checked (0: 24) */
	int probes_w;        /* entries checked per tensor (0: 12) */
	uint64_t seed;
} arb_harness_fd_opts;

typedef struct arb_harness_fd_report {
	double max_rel_x;    /* worst relative error, input gradient */
	double max_rel_w;    /* worst relative error over every voted tensor */
	int checked_x, checked_w;
	int tensors;         /* tensors with recorded votes */
	char worst[160];     /* where the worst weight error is */
} arb_harness_fd_report;

static inline double arb_h__loss(const float *y, const float *R, int64_t n)
{
	double s = 0;
	for (int64_t i = 0; i < n; i++) s += (double)y[i] * R[i];
	return s;
}

static inline double arb_h__rel(double a, double f, double floor_)
{
	double d = fabs(a - f), m = fmax(fmax(fabs(a), fabs(f)), floor_);
	return m > 0 ? d / m : 0;
}

static inline arb_status arb_harness_fd_check(arb_harness *H,
					      const arb_harness_fd_opts *o_in,
					      arb_harness_fd_report *r,
					      arb_error *err)
{
	arb_harness_fd_opts o = *o_in;
	if (!o.B) o.B = 2;
	if (!o.T) o.T = H->info.ctx;
	if (o.eps_x == 0) o.eps_x = 1e-2;
	if (o.eps_w == 0) o.eps_w = 1e-2;
	if (!o.probes_x) o.probes_x = 24;
	if (!o.probes_w) o.probes_w = 12;
	memset(r, 0, sizeof *r);
	arb_harness_buf b;
	double gmax = 0;
	arb_status st = arb_h__buf(H, &b, o.B, o.T, o.seed, err);
	if (st) return st;
	int64_t n = b.M * b.D;
	float *x = (float *)malloc((size_t)n * sizeof *x);
	float *R = (float *)malloc((size_t)n * sizeof *R);
	float *y = (float *)malloc((size_t)n * sizeof *y);
	float *dx = (float *)malloc((size_t)n * sizeof *dx);
	if (!x || !R || !y || !dx) {
		st = (arb_status)arb_h__set_error(err, ARB_ERR_NOMEM, "harness: out of memory");
		goto done;
	}
	for (int64_t i = 0; i < n; i++) {
		x[i] = arb_harness_rand(o.seed, (uint64_t)i);
		R[i] = arb_harness_rand(o.seed + 1, (uint64_t)i);
	}
	/* analytic: one training forward + backward, votes recorded */
	for (int i = 0; i < H->n_tern; i++) {
		free(H->dW[i]);
		H->dW[i] = (double *)calloc((size_t)(H->tern[i]->rows * H->tern[i]->cols),
					    sizeof(double));
		if (!H->dW[i]) {
			st = (arb_status)arb_h__set_error(err, ARB_ERR_NOMEM, "harness: out of memory");
			goto done;
		}
	}
	H->recording = 1;
	H->fd_w = NULL;
	if ((st = arb_harness_forward(H, &b, x, y, o.layer, 1, err))) goto done;
	if ((st = arb_harness_backward(H, &b, R, dx, o.layer, err))) goto done;
	H->recording = 0;

	/* input: central differences at probes_x entries */
	for (int64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(dx[i]));
	for (int p = 0; p < o.probes_x; p++) {
		int64_t i = (int64_t)(arb_rng_u32(o.seed, 91, (uint64_t)p) % (uint64_t)n);
		float keep = x[i];
		x[i] = (float)(keep + o.eps_x);
		if ((st = arb_harness_forward(H, &b, x, y, o.layer, 1, err))) goto done;
		double lp = arb_h__loss(y, R, n);
		x[i] = (float)(keep - o.eps_x);
		if ((st = arb_harness_forward(H, &b, x, y, o.layer, 1, err))) goto done;
		double lm = arb_h__loss(y, R, n);
		x[i] = keep;
		double f = (lp - lm) / (2 * o.eps_x);
		r->max_rel_x = fmax(r->max_rel_x, arb_h__rel(dx[i], f, 1e-3 * gmax));
		r->checked_x++;
	}

	/* weights: every tensor that received votes */
	for (int t = 0; t < H->n_tern; t++) {
		arb_tern *w = H->tern[t];
		int64_t nw = w->rows * w->cols;
		double wmax = 0;
		for (int64_t i = 0; i < nw; i++) wmax = fmax(wmax, fabs(H->dW[t][i]));
		if (wmax == 0) continue;
		r->tensors++;
		for (int p = 0; p < o.probes_w; p++) {
			int64_t i = (int64_t)(arb_rng_u32(o.seed, 92 + (uint64_t)t,
							  (uint64_t)p) % (uint64_t)nw);
			H->fd_w = w;
			H->fd_n = i / w->cols;
			H->fd_k = i % w->cols;
			H->fd_delta = o.eps_w;
			if ((st = arb_harness_forward(H, &b, x, y, o.layer, 1, err))) goto done;
			double lp = arb_h__loss(y, R, n);
			H->fd_delta = -o.eps_w;
			if ((st = arb_harness_forward(H, &b, x, y, o.layer, 1, err))) goto done;
			double lm = arb_h__loss(y, R, n);
			H->fd_delta = 0;
			H->fd_w = NULL;
			double f = (lp - lm) / (2 * o.eps_w);
			double e = arb_h__rel(H->dW[t][i], f, 1e-3 * wmax);
			if (e >= r->max_rel_w) {
				r->max_rel_w = e;
				snprintf(r->worst, sizeof r->worst,
					 "%s[%lld][%lld]: vote dW %.6g, fd %.6g", w->name,
					 (long long)H->fd_n, (long long)H->fd_k,
					 H->dW[t][i], f);
			}
			r->checked_w++;
		}
	}
done:
	H->recording = 0;
	H->fd_w = NULL;
	H->fd_delta = 0;
	arb_h__buf_free(H, &b);
	free(x);
	free(R);
	free(y);
	free(dx);
	return st;
}

/* ---------------------------------------------------------------------------
 * two backends: the same component (same config, same seed: tensors
 * initialize identically) on harness a and b, same x and dy; max absolute
 * difference of y and of dx relative to max |value|. Also counts T_accum
 * entries that differ after the backward's votes (exact when the float
 * votes have the same signs). */
typedef struct arb_harness_cmp_report {
	double max_rel_y, max_rel_dx;
	int64_t accum_diff, accum_total;
} arb_harness_cmp_report;

static inline double arb_h__maxdiff(const float *a, const float *b, int64_t n)
{
	double d = 0, m = 0;
	for (int64_t i = 0; i < n; i++) {
		d = fmax(d, fabs((double)a[i] - b[i]));
		m = fmax(m, fabs((double)a[i]));
	}
	return m > 0 ? d / m : d;
}

static inline arb_status arb_harness_compare(arb_harness *A, arb_harness *Bh,
					     int B, int T, int layer,
					     uint64_t seed,
					     arb_harness_cmp_report *r,
					     arb_error *err)
{
	memset(r, 0, sizeof *r);
	arb_harness_buf ba, bb;
	arb_status st = arb_h__buf(A, &ba, B, T, seed, err);
	if (st) return st;
	if ((st = arb_h__buf(Bh, &bb, B, T, seed, err))) {
		arb_h__buf_free(A, &ba);
		return st;
	}
	int64_t n = ba.M * ba.D;
	float *x = (float *)malloc((size_t)n * 4), *dy = (float *)malloc((size_t)n * 4);
	float *ya = (float *)malloc((size_t)n * 4), *yb = (float *)malloc((size_t)n * 4);
	if (!x || !dy || !ya || !yb) {
		st = (arb_status)arb_h__set_error(err, ARB_ERR_NOMEM, "harness: out of memory");
		goto done;
	}
	for (int64_t i = 0; i < n; i++) {
		x[i] = arb_harness_rand(seed, (uint64_t)i);
		dy[i] = arb_harness_rand(seed + 1, (uint64_t)i);
	}
	if ((st = arb_harness_forward(A, &ba, x, ya, layer, 1, err))) goto done;
	if ((st = arb_harness_forward(Bh, &bb, x, yb, layer, 1, err))) goto done;
	r->max_rel_y = arb_h__maxdiff(ya, yb, n);
	if ((st = arb_harness_backward(A, &ba, dy, ya, layer, err))) goto done;
	if ((st = arb_harness_backward(Bh, &bb, dy, yb, layer, err))) goto done;
	r->max_rel_dx = arb_h__maxdiff(ya, yb, n);
	for (int t = 0; t < A->n_tern && t < Bh->n_tern; t++) {
		arb_tern *wa = A->tern[t], *wb = Bh->tern[t];
		if (!wa->T_accum || !wb->T_accum) continue;
		size_t nw = (size_t)(wa->rows * wa->cols);
		int8_t *ta = (int8_t *)malloc(nw), *tb = (int8_t *)malloc(nw);
		if (!ta || !tb) abort();
		A->be->download(A->be, ta, wa->T_accum, nw);
		Bh->be->download(Bh->be, tb, wb->T_accum, nw);
		for (size_t i = 0; i < nw; i++) r->accum_diff += ta[i] != tb[i];
		r->accum_total += (int64_t)nw;
		free(ta);
		free(tb);
	}
done:
	arb_h__buf_free(A, &ba);
	arb_h__buf_free(Bh, &bb);
	free(x);
	free(dy);
	free(ya);
	free(yb);
	return st;
}

#ifdef __cplusplus
}
#endif
#endif /* ARB_HARNESS_H */
