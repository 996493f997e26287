/*
 * plugins/moe/moe.c -- SharedProjectionMoE: replaces the trunk's SwiGLU FFN
 * (ARB_SLOT_FFN) in the layers named by `layers` (README.md has the design).
 *
 * Per layer l (tensors "<instance>.L<l>.<name>", all ternary, all through
 * host->tern_create; with trunk = false one set "<instance>.<name>" that
 * serves every call, whatever io->layer: the instance runs in no block and
 * only another component calls it, e.g. the graph's ACT loop):
 *   router  E x D          logits = x R^T
 *   gate    F x D (Gs)     shared gate projection
 *   up      F x D (Us)     shared up projection
 *   down    D x F (Ds)     shared down projection
 *   a       2Er x D        expert e: rows [2er, 2er+r) = Ag_e, then Au_e
 *   bg      F x Er         column block e = Bg_e (F x r)
 *   bu      F x Er         column block e = Bu_e
 *
 *   g_e = Gs x + Bg_e Ag_e x,  u_e = Us x + Bu_e Au_e x,  h_e = silu(g_e) u_e
 *   y  += Ds sum_{e in topk(x)} w_e h_e
 *
 * The big products run through io->be (CPU reference or CUDA alike); the
 * low-rank B products run as ONE backend product on block-masked rows (a
 * dispatch row of expert e carries its a-values in column block e only), so
 * that dense and sparse dispatch have fixed shapes (E*M resp. M*k rows) and
 * need no host synchronisation. The small steps (top-k, dispatch, combine and
 * their backward) are moe_kernels: the CPU version below, CUDA in moe.cu.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "arb/plugin.h"
#include "moe_kern.h"

#define MOE_MAX_LAYERS 256

/* ------------------------------------------------------------------------
 * CPU reference of the small steps (definitions in moe_kern.h) */

static float silu_f(float g, float *sig)
{
	float s = 1.0f / (1.0f + expf(-g));
	if (sig) *sig = s;
	return g * s;
}

static void cpu_route(const moe_dims *d, const float *logits, int32_t *idx,
		      float *w)
{
	for (int64_t m = 0; m < d->M; m++) {
		const float *l = logits + m * d->E;
		int32_t *id = idx + m * d->k;
		float *wm = w + m * d->k;
		for (int s = 0; s < d->k; s++) {
			int best = -1;
			for (int e = 0; e < d->E; e++) {
				int taken = 0;
				for (int t = 0; t < s; t++) taken |= id[t] == e;
				if (taken) continue;
				/* strict '>' keeps the lower index on ties; a
				 * NaN logit is never preferred */
				if (best < 0 || l[e] > l[best]) best = e;
			}
			id[s] = best;
		}
		float mx = l[id[0]], sum = 0.0f;
		for (int s = 0; s < d->k; s++) {
			wm[s] = expf(l[id[s]] - mx);
			sum += wm[s];
		}
		for (int s = 0; s < d->k; s++) wm[s] /= sum;
	}
}

/* softmax over all E logits of one token */
static void softmax_row(const float *l, int E, float *p)
{
	float mx = l[0], sum = 0.0f;
	for (int e = 1; e < E; e++) mx = l[e] > mx ? l[e] : mx;
	for (int e = 0; e < E; e++) {
		p[e] = expf(l[e] - mx);
		sum += p[e];
	}
	for (int e = 0; e < E; e++) p[e] /= sum;
}

static void cpu_stats(const moe_dims *d, const float *logits,
		      const int32_t *idx, float *stat)
{
	int E = d->E;
	float p[MOE_MAX_EXPERTS];
	double cnt[MOE_MAX_EXPERTS] = { 0 }, ps[MOE_MAX_EXPERTS] = { 0 };
	for (int64_t m = 0; m < d->M; m++) {
		softmax_row(logits + m * E, E, p);
		for (int e = 0; e < E; e++) ps[e] += p[e];
		for (int s = 0; s < d->k; s++) cnt[idx[m * d->k + s]] += 1.0;
	}
	double aux = 0.0;
	for (int e = 0; e < E; e++) {
		aux += cnt[e] / (double)(d->M * d->k) * (ps[e] / (double)d->M);
		stat[1 + e] = (float)cnt[e];
		stat[1 + E + e] = (float)ps[e];
	}
	stat[0] = (float)(d->coef * aux);
}

static void cpu_dispatch_dense(const moe_dims *d, const int32_t *idx,
			       const float *w, int32_t *tok, int32_t *ex,
			       float *wt, int32_t *rslot, int32_t *rowpos)
{
	int64_t M = d->M;
	for (int64_t j = 0; j < (int64_t)d->E * M; j++) {
		int e = (int)(j / M);
		int64_t m = j % M;
		tok[j] = (int32_t)m;
		ex[j] = e;
		wt[j] = 0.0f;
		rslot[j] = -1;
		for (int s = 0; s < d->k; s++) {
			if (idx[m * d->k + s] != e) continue;
			wt[j] = w[m * d->k + s];
			rslot[j] = (int32_t)(m * d->k + s);
			rowpos[m * d->k + s] = (int32_t)j;
		}
	}
}

static void cpu_dispatch_sparse(const moe_dims *d, const int32_t *idx,
				const float *w, const float *stat, int32_t *tok,
				int32_t *ex, float *wt, int32_t *rslot,
				int32_t *rowpos, int32_t *off)
{
	int64_t n = d->M * d->k;
	int32_t fill[MOE_MAX_EXPERTS];
	off[0] = 0;
	for (int e = 0; e < d->E; e++)
		off[e + 1] = off[e] + (int32_t)stat[1 + e];
	for (int e = 0; e < d->E; e++) fill[e] = off[e];
	for (int64_t i = 0; i < n; i++) {     /* stable: assignment order */
		int e = idx[i];
		int32_t row = fill[e]++;
		tok[row] = (int32_t)(i / d->k);
		ex[row] = e;
		wt[row] = w[i];
		rslot[row] = (int32_t)i;
		rowpos[i] = row;
	}
}

static void cpu_build_x(const moe_dims *d, const float *a, const int32_t *tok,
			const int32_t *ex, float *xg, float *xu)
{
	int r = d->r, Er = d->E * d->r;
	memset(xg, 0, (size_t)d->P * Er * sizeof *xg);
	memset(xu, 0, (size_t)d->P * Er * sizeof *xu);
	for (int64_t j = 0; j < d->P; j++) {
		int e = ex[j];
		const float *am = a + (int64_t)tok[j] * 2 * Er + 2 * e * r;
		memcpy(xg + j * Er + e * r, am, r * sizeof *xg);
		memcpy(xu + j * Er + e * r, am + r, r * sizeof *xu);
	}
}

static void cpu_combine_forward(const moe_dims *d, const int32_t *rowpos,
				const float *w, const float *g0,
				const float *u0, float *G, float *U, float *c)
{
	int64_t F = d->F;
	for (int64_t m = 0; m < d->M; m++) {
		float *cm = c + m * F;
		for (int64_t f = 0; f < F; f++) cm[f] = 0.0f;
		for (int s = 0; s < d->k; s++) {
			int64_t row = rowpos[m * d->k + s];
			float ws = w[m * d->k + s];
			float *g = G + row * F, *u = U + row * F;
			for (int64_t f = 0; f < F; f++) {
				g[f] += g0[m * F + f];
				u[f] += u0[m * F + f];
				cm[f] += ws * (silu_f(g[f], NULL) * u[f]);
			}
		}
	}
}

static void cpu_combine_backward(const moe_dims *d, const int32_t *tok,
				 const float *wt, const int32_t *rslot,
				 const float *dc, float *G, float *U, float *dw)
{
	int64_t F = d->F;
	for (int64_t j = 0; j < d->P; j++) {
		const float *dcm = dc + (int64_t)tok[j] * F;
		float *g = G + j * F, *u = U + j * F;
		float wj = wt[j];
		double dot = 0.0;
		for (int64_t f = 0; f < F; f++) {
			float sg, sl = silu_f(g[f], &sg);
			float h = sl * u[f];
			float dh = wj * dcm[f];
			dot += (double)dcm[f] * h;
			float dgv = dh * u[f] * (sg * (1.0f + g[f] * (1.0f - sg)));
			u[f] = dh * sl;
			g[f] = dgv;
		}
		if (rslot[j] >= 0) dw[rslot[j]] = (float)dot;
	}
}

static void cpu_shared_grad(const moe_dims *d, const int32_t *rowpos,
			    const float *dG, const float *dU, float *dg0,
			    float *du0)
{
	int64_t F = d->F;
	for (int64_t m = 0; m < d->M; m++) {
		for (int64_t f = 0; f < F; f++) {
			float sg = 0.0f, su = 0.0f;
			for (int s = 0; s < d->k; s++) {
				int64_t row = rowpos[m * d->k + s];
				sg += dG[row * F + f];
				su += dU[row * F + f];
			}
			dg0[m * F + f] = sg;
			du0[m * F + f] = su;
		}
	}
}

static void cpu_lowrank_grad(const moe_dims *d, const int32_t *idx,
			     const int32_t *rowpos, const float *dXg,
			     const float *dXu, float *da)
{
	int r = d->r, Er = d->E * d->r;
	memset(da, 0, (size_t)d->M * 2 * Er * sizeof *da);
	for (int64_t m = 0; m < d->M; m++) {
		for (int s = 0; s < d->k; s++) {
			int e = idx[m * d->k + s];
			int64_t row = rowpos[m * d->k + s];
			float *dam = da + m * 2 * Er + 2 * e * r;
			memcpy(dam, dXg + row * Er + e * r, r * sizeof *da);
			memcpy(dam + r, dXu + row * Er + e * r, r * sizeof *da);
		}
	}
}

static void cpu_router_grad(const moe_dims *d, const float *logits,
			    const int32_t *idx, const float *w, const float *dw,
			    const float *stat, float *dlogits)
{
	int E = d->E, k = d->k;
	float p[MOE_MAX_EXPERTS];
	float fk = 1.0f / (float)(d->M * k), cm = d->coef / (float)d->M;
	for (int64_t m = 0; m < d->M; m++) {
		float *dl = dlogits + m * E;
		const float *wm = w + m * k, *dwm = dw + m * k;
		softmax_row(logits + m * E, E, p);
		float fp = 0.0f;
		for (int e = 0; e < E; e++) fp += stat[1 + e] * fk * p[e];
		for (int e = 0; e < E; e++)
			dl[e] = cm * p[e] * (stat[1 + e] * fk - fp);
		float wdw = 0.0f;
		for (int s = 0; s < k; s++) wdw += wm[s] * dwm[s];
		for (int s = 0; s < k; s++)
			dl[idx[m * k + s]] += wm[s] * (dwm[s] - wdw);
	}
}

static void cpu_route_dense(const moe_dims *d, const float *logits,
			    int32_t *idx, float *w, float *stat, int32_t *tok,
			    int32_t *ex, float *wt, int32_t *rslot,
			    int32_t *rowpos)
{
	cpu_route(d, logits, idx, w);
	cpu_stats(d, logits, idx, stat);
	cpu_dispatch_dense(d, idx, w, tok, ex, wt, rslot, rowpos);
}

static int cpu_check(char *msg, size_t cap)
{
	(void)msg;
	(void)cap;
	return 0;
}

static const moe_kernels cpu_kernels = {
	cpu_route, cpu_stats, cpu_dispatch_dense, cpu_route_dense,
	cpu_dispatch_sparse,
	cpu_build_x, cpu_combine_forward, cpu_combine_backward,
	cpu_shared_grad, cpu_lowrank_grad, cpu_router_grad, cpu_check,
};

/* ------------------------------------------------------------------------
 * instance */

enum { T_ROUTER, T_GATE, T_UP, T_DOWN, T_A, T_BG, T_BU, T_COUNT };
static const char *const tensor_names[T_COUNT] = {
	"router", "gate", "up", "down", "a", "bg", "bu",
};

/* per-layer workspace in backend memory, sized for cm tokens and cp
 * dispatch rows: X(type, field, elements) */
#define MOE_WS_FIELDS(X) \
	X(float, x, cm * D)           /* input copy (backward needs it) */ \
	X(float, logits, cm * E)      \
	X(int32_t, idx, cm * k)       /* top-k experts */ \
	X(float, w, cm * k)           /* route weights */ \
	X(float, stat, 1 + 2 * E)     /* aux, counts, prob sums */ \
	X(int32_t, tok, cp)           /* dispatch rows: token */ \
	X(int32_t, ex, cp)            /*   expert */ \
	X(int32_t, rslot, cp)         /*   slot m*k+s or -1 */ \
	X(float, wt, cp)              /*   route weight or 0 */ \
	X(int32_t, rowpos, cm * k)    /* slot -> row */ \
	X(int32_t, off, E + 1)        /* sparse group offsets */ \
	X(float, g0, cm * F)          /* shared gate; backward: its grad */ \
	X(float, u0, cm * F)          /* shared up; backward: its grad */ \
	X(float, a, cm * 2 * Er)      /* A x for every expert */ \
	X(float, xg, cp * Er)         /* block-masked B inputs */ \
	X(float, xu, cp * Er)         \
	X(float, G, cp * F)           /* expert pre-acts; backward: grads */ \
	X(float, U, cp * F)           \
	X(float, c, cm * F)           /* combined hidden */ \
	X(float, dc, cm * F)          \
	X(float, dxg, cp * Er)        \
	X(float, dxu, cp * Er)        \
	X(float, da, cm * 2 * Er)     \
	X(float, dw, cm * k)          /* route-weight gradients */ \
	X(float, dlogits, cm * E)

typedef struct moe_ws {
	int64_t cap_m, cap_p;
#define X(type, f, n) type *f;
	MOE_WS_FIELDS(X)
#undef X
} moe_ws;

typedef struct moe_layer {
	int layer;
	arb_tern *t[T_COUNT];
	moe_ws ws;
	arb_backend *ws_be;  /* backend the workspace lives in */
	int64_t last_m, last_p;
	int last_dense;
	int have_forward;
	float stat_host[1 + MOE_MAX_EXPERTS];
} moe_layer;

typedef struct moe {
	const arb_host *host;
	char instance[64];
	int D, F, E, k, r;
	int trunk;           /* 0: no block; one set for host calls */
	double balance;
	int64_t dense_max;
	int n_layers;
	moe_layer *L;
	double last_aux;
} moe;

static const arb_conf_key moe_schema[] = {
	{ "layers", ARB_CONF_INT_LIST, "", 0, 4095, NULL,
	  "blocks whose SwiGLU FFN this MoE replaces (empty = every block; "
	  "must be empty with trunk = false)" },
	{ "trunk", ARB_CONF_BOOL, "true", 0, 0, NULL,
	  "false: replace no block's FFN; one weight set, run only by another "
	  "component through the host (e.g. [graph] experts = this instance)" },
	{ "experts", ARB_CONF_INT, "8", 1, MOE_MAX_EXPERTS, NULL,
	  "number of experts E" },
	{ "top_k", ARB_CONF_INT, "2", 1, MOE_MAX_TOPK, NULL,
	  "experts per token (<= experts)" },
	{ "rank", ARB_CONF_INT, "16", 1, 1024, NULL,
	  "rank r of each expert's low-rank gate/up delta" },
	{ "hidden", ARB_CONF_INT, "0", 0, 1 << 20, NULL,
	  "shared hidden width F (0 = 4 * d_model)" },
	{ "balance", ARB_CONF_FLOAT, "0.01", 0, 100, NULL,
	  "load-balancing coefficient (Switch aux loss, gradient into the "
	  "router's votes)" },
	{ "dense_dispatch_max_tokens", ARB_CONF_INT, "128", 0, 1 << 30, NULL,
	  "B*T up to this runs every expert on all tokens (fixed shapes); "
	  "above: grouped sparse dispatch" },
	ARB_CONF_END
};

static const moe_kernels *kernels_for(const moe *s, arb_backend *be,
				      arb_error *err)
{
	if (!be->is_device) return &cpu_kernels;
#ifdef ARB_HAVE_CUDA
	return moe_cuda_kernels();
#else
	s->host->set_error(err, ARB_ERR_UNSUPPORTED,
			   "[%s] backend '%s' is a device backend but the moe "
			   "plugin was built without CUDA", s->instance, be->name);
	return NULL;
#endif
}

static void ws_free(moe_layer *L)
{
	arb_backend *be = L->ws_be;
	if (!be) return;
#define X(type, f, n) if (L->ws.f) be->free(be, L->ws.f); L->ws.f = NULL;
	MOE_WS_FIELDS(X)
#undef X
	L->ws.cap_m = L->ws.cap_p = 0;
	L->ws_be = NULL;
}

static arb_status ws_ensure(moe *s, moe_layer *L, arb_backend *be, int64_t M,
			    int64_t P, arb_error *err)
{
	if (L->ws_be == be && M <= L->ws.cap_m && P <= L->ws.cap_p) return ARB_OK;
	int64_t cm = M > L->ws.cap_m ? M : L->ws.cap_m;
	int64_t cp = P > L->ws.cap_p ? P : L->ws.cap_p;
	if (L->ws_be != be) cm = M, cp = P;
	ws_free(L);
	L->ws_be = be;
	int64_t D = s->D, F = s->F, E = s->E, k = s->k, Er = (int64_t)s->E * s->r;
	int ok = 1;
#define X(type, f, n) \
	if (ok) { \
		L->ws.f = be->alloc(be, (size_t)(n) * sizeof(type)); \
		ok = L->ws.f != NULL; \
	}
	MOE_WS_FIELDS(X)
#undef X
	if (!ok) {
		ws_free(L);
		return s->host->set_error(err, ARB_ERR_NOMEM,
					  "[%s] layer %d: out of %s memory for %lld "
					  "tokens", s->instance, L->layer, be->name,
					  (long long)M);
	}
	L->ws.cap_m = cm;
	L->ws.cap_p = cp;
	return ARB_OK;
}

static void moe_destroy(void *self)
{
	moe *s = self;
	if (!s) return;
	for (int i = 0; i < s->n_layers; i++) ws_free(&s->L[i]);
	free(s->L);
	free(s);
}

static arb_status moe_create(const arb_host *host, const arb_conf *conf,
			     const char *instance, void **self, arb_error *err)
{
	const arb_model_info *mi = host->model(host);
	moe *s = calloc(1, sizeof *s);
	if (!s) return host->set_error(err, ARB_ERR_NOMEM, "[%s] out of memory",
				       instance);
	*self = s;
	s->host = host;
	snprintf(s->instance, sizeof s->instance, "%s", instance);
	s->D = mi->d_model;
	s->E = (int)host->conf_int(conf, "experts");
	s->k = (int)host->conf_int(conf, "top_k");
	s->r = (int)host->conf_int(conf, "rank");
	int64_t F = host->conf_int(conf, "hidden");
	s->F = (int)(F ? F : 4 * (int64_t)s->D);
	s->balance = host->conf_float(conf, "balance");
	s->dense_max = host->conf_int(conf, "dense_dispatch_max_tokens");
	s->trunk = host->conf_bool(conf, "trunk");
	if (s->k > s->E)
		return host->set_error(err, ARB_ERR_CONFIG,
				       "[%s] top_k: %d is more than experts = %d",
				       instance, s->k, s->E);
	if (s->D <= 0)
		return host->set_error(err, ARB_ERR_CONFIG,
				       "[%s] model width %d", instance, s->D);

	int64_t lst[MOE_MAX_LAYERS];
	int nl = host->conf_int_list(conf, "layers", lst, MOE_MAX_LAYERS);
	if (nl > MOE_MAX_LAYERS) nl = MOE_MAX_LAYERS;
	if (!s->trunk && nl)
		return host->set_error(err, ARB_ERR_CONFIG,
				       "[%s] layers: must be empty with trunk = "
				       "false (the instance serves no block)",
				       instance);
	s->n_layers = !s->trunk ? 1 : nl ? nl : mi->n_layers;
	if (s->n_layers <= 0 || s->n_layers > MOE_MAX_LAYERS)
		return host->set_error(err, ARB_ERR_CONFIG,
				       "[%s] layers: %d layers (1..%d)", instance,
				       s->n_layers, MOE_MAX_LAYERS);
	s->L = calloc(s->n_layers, sizeof *s->L);
	if (!s->L) return host->set_error(err, ARB_ERR_NOMEM, "[%s] out of memory",
					  instance);
	int64_t E = s->E, Er = (int64_t)s->E * s->r, D = s->D, Fh = s->F;
	for (int i = 0; i < s->n_layers; i++) {
		moe_layer *L = &s->L[i];
		L->layer = !s->trunk ? -1 : nl ? (int)lst[i] : i;
		if (s->trunk && mi->n_layers > 0 &&
		    (L->layer < 0 || L->layer >= mi->n_layers))
			return host->set_error(err, ARB_ERR_CONFIG,
					       "[%s] layers: %d is not a block index "
					       "(model has %d layers)", instance,
					       L->layer, mi->n_layers);
		for (int j = 0; j < i; j++)
			if (s->L[j].layer == L->layer)
				return host->set_error(err, ARB_ERR_CONFIG,
						       "[%s] layers: %d listed twice",
						       instance, L->layer);
		const int64_t shape[T_COUNT][3] = {
			/* rows, cols, fan_in */
			{ E, D, D }, { Fh, D, D }, { Fh, D, D }, { D, Fh, Fh },
			{ 2 * Er, D, D }, { Fh, Er, s->r }, { Fh, Er, s->r },
		};
		for (int t = 0; t < T_COUNT; t++) {
			arb_tern_param p;
			memset(&p, 0, sizeof p);
			p.struct_size = sizeof p;
			p.zero_frac = -1.0;
			p.fan_in = shape[t][2];
			char name[48];
			if (s->trunk)
				snprintf(name, sizeof name, "L%d.%s", L->layer,
					 tensor_names[t]);
			else
				snprintf(name, sizeof name, "%s", tensor_names[t]);
			arb_status st = host->tern_create(host, instance, name,
							  shape[t][0], shape[t][1],
							  &p, &L->t[t], err);
			if (st) return st;
		}
	}
	char where[48];
	if (s->trunk)
		snprintf(where, sizeof where, "%d layer(s)", s->n_layers);
	else
		snprintf(where, sizeof where, "no block (host calls only)");
	host->log(host, ARB_LOG_INFO,
		  "SharedProjectionMoE: %s, D=%d F=%d experts=%d top_k=%d "
		  "rank=%d balance=%g dense<=%lld tokens", where, s->D, s->F,
		  s->E, s->k, s->r, s->balance, (long long)s->dense_max);
	return ARB_OK;
}

static moe_layer *layer_of(moe *s, int layer)
{
	if (!s->trunk) return &s->L[0];
	for (int i = 0; i < s->n_layers; i++)
		if (s->L[i].layer == layer) return &s->L[i];
	return NULL;
}

static void dims_of(const moe *s, int64_t M, int dense, moe_dims *d)
{
	d->M = M;
	d->P = dense ? (int64_t)s->E * M : M * s->k;
	d->D = s->D;
	d->F = s->F;
	d->E = s->E;
	d->k = s->k;
	d->r = s->r;
	d->coef = (float)(s->balance * s->E);
}

static arb_status kernels_ok(moe *s, const moe_kernels *K, const char *what,
			     arb_error *err)
{
	char msg[256];
	if (K->check(msg, sizeof msg) == 0) return ARB_OK;
	return s->host->set_error(err, ARB_ERR_CUDA, "[%s] %s: %s", s->instance,
				  what, msg);
}

static void publish_routing(moe *s, moe_layer *L, const moe_dims *d)
{
	const arb_host *h = s->host;
	if (!h->publish) return;
	struct { const char *n; int dt; int nd; int64_t s0, s1; void *p; } t[] = {
		{ "topk_idx", ARB_I32, 2, d->M, d->k, L->ws.idx },
		{ "topk_w", ARB_F32, 2, d->M, d->k, L->ws.w },
		{ "stat", ARB_F32, 1, 1 + 2 * d->E, 0, L->ws.stat },
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		arb_named nt;
		memset(&nt, 0, sizeof nt);
		nt.struct_size = sizeof nt;
		nt.dtype = t[i].dt;
		nt.ndim = t[i].nd;
		nt.shape[0] = t[i].s0;
		nt.shape[1] = t[i].s1;
		nt.data = t[i].p;
		char name[128];
		if (s->trunk)
			snprintf(name, sizeof name, "%s.L%d.%s", s->instance,
				 L->layer, t[i].n);
		else
			snprintf(name, sizeof name, "%s.%s", s->instance, t[i].n);
		h->publish(h, name, &nt, NULL);
	}
}

static arb_status moe_forward(void *self, arb_io *io, arb_error *err)
{
	moe *s = self;
	arb_backend *be = io->be;
	moe_layer *L = layer_of(s, io->layer);
	if (!L)
		return s->host->set_error(err, ARB_ERR_INVALID,
					  "[%s] forward called for layer %d, which "
					  "is not in `layers`", s->instance,
					  io->layer);
	if (io->D != s->D)
		return s->host->set_error(err, ARB_ERR_INVALID,
					  "[%s] io width %d != model width %d",
					  s->instance, io->D, s->D);
	const moe_kernels *K = kernels_for(s, be, err);
	if (!K) return ARB_ERR_UNSUPPORTED;
	int64_t M = (int64_t)io->B * io->T;
	if (M <= 0) return ARB_OK;
	if (M * s->k >= (1 << 24))
		return s->host->set_error(err, ARB_ERR_INVALID,
					  "[%s] %lld tokens x top_k: too many for "
					  "one call (< 2^24)", s->instance,
					  (long long)M);
	int dense = M <= s->dense_max;
	moe_dims d;
	dims_of(s, M, dense, &d);
	arb_status st = ws_ensure(s, L, be, M, d.P, err);
	if (st) return st;
	moe_ws *w = &L->ws;
	arb_tern **t = L->t;

	be->copy(be, w->x, io->x, (size_t)M * s->D * sizeof(float));
	/* routing */
	be->linear_forward(be, t[T_ROUTER], w->x, w->logits, M, 0);
	if (dense) {
		K->route_dense(&d, w->logits, w->idx, w->w, w->stat, w->tok, w->ex,
			       w->wt, w->rslot, w->rowpos);
	} else {
		K->route(&d, w->logits, w->idx, w->w);
		K->stats(&d, w->logits, w->idx, w->stat);
		K->dispatch_sparse(&d, w->idx, w->w, w->stat, w->tok, w->ex,
				   w->wt, w->rslot, w->rowpos, w->off);
	}
	/* shared projections, once per token */
	be->linear_forward(be, t[T_GATE], w->x, w->g0, M, 0);
	be->linear_forward(be, t[T_UP], w->x, w->u0, M, 0);
	/* expert low-rank deltas: A on every token, B on the dispatch rows */
	be->linear_forward(be, t[T_A], w->x, w->a, M, 0);
	K->build_x(&d, w->a, w->tok, w->ex, w->xg, w->xu);
	be->linear_forward(be, t[T_BG], w->xg, w->G, d.P, 0);
	be->linear_forward(be, t[T_BU], w->xu, w->U, d.P, 0);
	/* fused: add shared pre-activations, SwiGLU, weighted combine */
	K->combine_forward(&d, w->rowpos, w->w, w->g0, w->u0, w->G, w->U, w->c);
	/* one down projection per token (Ds is linear) */
	be->linear_forward(be, t[T_DOWN], w->c, io->y, M, 1);
	st = kernels_ok(s, K, "forward", err);
	if (st) return st;

	be->download(be, L->stat_host, w->stat, (1 + (size_t)s->E) * sizeof(float));
	io->aux_loss = L->stat_host[0];
	s->last_aux = L->stat_host[0];
	L->last_m = M;
	L->last_p = d.P;
	L->last_dense = dense;
	L->have_forward = 1;
	publish_routing(s, L, &d);
	return ARB_OK;
}

static arb_status moe_backward(void *self, arb_io *io, arb_error *err)
{
	moe *s = self;
	arb_backend *be = io->be;
	moe_layer *L = layer_of(s, io->layer);
	if (!L)
		return s->host->set_error(err, ARB_ERR_INVALID,
					  "[%s] backward called for layer %d, which "
					  "is not in `layers`", s->instance,
					  io->layer);
	int64_t M = (int64_t)io->B * io->T;
	if (M <= 0) return ARB_OK;
	if (!L->have_forward || L->last_m != M || L->ws_be != be)
		return s->host->set_error(err, ARB_ERR_INVALID,
					  "[%s] backward of layer %d without a "
					  "matching forward (%lld tokens)",
					  s->instance, io->layer, (long long)M);
	const moe_kernels *K = kernels_for(s, be, err);
	if (!K) return ARB_ERR_UNSUPPORTED;
	moe_dims d;
	dims_of(s, M, L->last_dense, &d);
	moe_ws *w = &L->ws;
	arb_tern **t = L->t;
	const arb_vote *v = io->vote;

	/* down */
	be->linear_backward_x(be, t[T_DOWN], io->dy, w->dc, M, 0);
	if (v) be->linear_vote(be, t[T_DOWN], w->c, io->dy, M, v);
	/* fused combine + SwiGLU backward: G, U become dG, dU; dw per slot */
	K->combine_backward(&d, w->tok, w->wt, w->rslot, w->dc, w->G, w->U,
			    w->dw);
	/* shared projections: g0, u0 become their gradients */
	K->shared_grad(&d, w->rowpos, w->G, w->U, w->g0, w->u0);
	if (v) {
		be->linear_vote(be, t[T_GATE], w->x, w->g0, M, v);
		be->linear_vote(be, t[T_UP], w->x, w->u0, M, v);
	}
	be->linear_backward_x(be, t[T_GATE], w->g0, io->dx, M, 1);
	be->linear_backward_x(be, t[T_UP], w->u0, io->dx, M, 1);
	/* low-rank deltas */
	if (v) {
		be->linear_vote(be, t[T_BG], w->xg, w->G, d.P, v);
		be->linear_vote(be, t[T_BU], w->xu, w->U, d.P, v);
	}
	be->linear_backward_x(be, t[T_BG], w->G, w->dxg, d.P, 0);
	be->linear_backward_x(be, t[T_BU], w->U, w->dxu, d.P, 0);
	K->lowrank_grad(&d, w->idx, w->rowpos, w->dxg, w->dxu, w->da);
	if (v) be->linear_vote(be, t[T_A], w->x, w->da, M, v);
	be->linear_backward_x(be, t[T_A], w->da, io->dx, M, 1);
	/* router: route-weight gradient through the top-k softmax + balance */
	K->router_grad(&d, w->logits, w->idx, w->w, w->dw, w->stat, w->dlogits);
	if (v) be->linear_vote(be, t[T_ROUTER], w->x, w->dlogits, M, v);
	be->linear_backward_x(be, t[T_ROUTER], w->dlogits, io->dx, M, 1);
	L->have_forward = 0;
	return kernels_ok(s, K, "backward", err);
}

static int moe_metrics(void *self, char *buf, size_t cap)
{
	moe *s = self;
	if (!s || cap == 0) return 0;
	/* load of the busiest expert relative to uniform, over the layers'
	 * last forward (1.0 = perfectly balanced) */
	double worst = 0.0;
	for (int i = 0; i < s->n_layers; i++) {
		moe_layer *L = &s->L[i];
		if (!L->last_m) continue;
		for (int e = 0; e < s->E; e++) {
			double f = L->stat_host[1 + e] * s->E /
				   ((double)L->last_m * s->k);
			if (f > worst) worst = f;
		}
	}
	int n = snprintf(buf, cap, "%s_aux=%.4g %s_maxload=%.3f", s->instance,
			 s->last_aux, s->instance, worst);
	if (n < 0) return 0;
	return (size_t)n >= cap ? (int)cap - 1 : n;
}

static const arb_plugin moe_plugin = {
	ARB_ABI_VERSION,
	sizeof(arb_plugin),
	ARB_BUILD_SIGNATURE,
	"moe",
	"0.1.0",
	"SharedProjectionMoE: shared ternary SwiGLU + per-expert low-rank "
	"deltas, top-k routing, dense/grouped dispatch",
	"MIT",
	ARB_SLOT_FFN,
	moe_schema,
	moe_create,
	moe_destroy,
	moe_forward,
	moe_backward,
	NULL,
	NULL,
	NULL,
	moe_metrics,
};

ARB_PLUGIN_DEFINE(moe_plugin)
