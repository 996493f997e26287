/*
 * examples/dwconv/dwconv.c -- a third-party arbcore component, built out of
 * tree against the installed SDK: a ternary gated depthwise causal
 * convolution in the FFN slot.
 *
 * Per layer l (tensors "<instance>.L<l>.<name>", all ternary, all made
 * through host->tern_create, so the core steps, audits and saves them):
 *
 *   g = x W_g^T                        W_g   D x D   ("g")
 *   c = dwconv_k(x)                    taps  k x D   ("taps": lag j, channel d)
 *       c[b,t,d] = sum_{j<k, t-j>=0} taps[j,d] * x[b,t-j,d]
 *   h = silu(g) * c
 *   y += h W_out^T                     W_out D x D   ("out")
 *
 * x is the block's normalized input, y the residual stream (FFN slot).
 *
 * The linear maps and the gate run on the backend ops (io->be), so the same
 * code runs on CPU and CUDA. The convolution has its own kernels
 * (dwconv_kern.h: C here, CUDA in dwconv.cu, chosen by io->be->is_device).
 * The taps are decoded to floats through the backend too: W^T [D, k] =
 * linear_forward(taps, I_D) (t * scale exactly, for every exponent rule),
 * and their votes go through linear_vote with x = dtaps [k, D] and dy = I_k,
 * so that dW = I^T dtaps = dtaps votes under the core's rule (sign or sr,
 * score, sumsq) like any other tensor. The plugin never touches trits,
 * exponents or accumulators itself.
 *
 * Backward (dy = gradient of the residual stream):
 *   dh = dy W_out;  vote W_out (h, dy)
 *   dg, dc = swiglu_backward(g, c, dh)
 *   vote W_g (x, dg);  dx += dg W_g
 *   dx += conv_bwd_x(dc);  dtaps = tap_grad(dc, x);  vote taps (dtaps, I_k)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "arb/plugin.h"
#include "dwconv_kern.h"

#define DW_MAX_LAYERS 256

/* ---------------------------------------------------------------------------
 * CPU kernels (definition of record; see dwconv_kern.h) */
static void cpu_conv_fwd(const float *x, const float *wt, float *c, int B,
			 int T, int D, int k)
{
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			int64_t m = (int64_t)b * T + t;
			for (int d = 0; d < D; d++) {
				float s = 0.0f;
				for (int j = 0; j < k && j <= t; j++)
					s += wt[(int64_t)d * k + j] * x[(m - j) * D + d];
				c[m * D + d] = s;
			}
		}
}

static void cpu_conv_bwd_x(const float *dc, const float *wt, float *dx, int B,
			   int T, int D, int k)
{
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			int64_t m = (int64_t)b * T + t;
			for (int d = 0; d < D; d++) {
				float s = 0.0f;
				for (int j = 0; j < k && t + j < T; j++)
					s += wt[(int64_t)d * k + j] * dc[(m + j) * D + d];
				dx[m * D + d] += s;
			}
		}
}

static void cpu_tap_grad(const float *dc, const float *x, float *dtaps, int B,
			 int T, int D, int k)
{
	for (int j = 0; j < k; j++)
		for (int d = 0; d < D; d++) {
			float s = 0.0f;
			for (int b = 0; b < B; b++) {
				int64_t base = (int64_t)b * T;
				for (int t = j; t < T; t++)
					s += dc[(base + t) * D + d] *
					     x[(base + t - j) * D + d];
			}
			dtaps[(int64_t)j * D + d] = s;
		}
}

static const dw_kernels cpu_kernels = { cpu_conv_fwd, cpu_conv_bwd_x,
					cpu_tap_grad };

/* ---------------------------------------------------------------------------
 * instance */
typedef struct dw_layer {
	int layer;
	arb_tern *wg, *wout, *taps;
	float *g, *c, *h;          /* [cap, D] kept for backward */
} dw_layer;

typedef struct dwconv {
	const arb_host *host;
	arb_backend *be;
	const dw_kernels *kern;
	int D, k, n_layers;
	dw_layer *L;
	int64_t cap;               /* rows the workspace holds */
	float *dh, *dg, *dc;       /* [cap, D] scratch */
	float *wt;                 /* [D, k] decoded taps */
	float *dtaps;              /* [k, D] */
	float *eye_d, *eye_k;      /* identities D x D, k x k */
} dwconv;

static const arb_conf_key dw_schema[] = {
	{ "kernel", ARB_CONF_INT, "4", 1, 64, NULL,
	  "taps per channel (causal window over positions)" },
	{ "layers", ARB_CONF_INT_LIST, "", 0, 4095, NULL,
	  "blocks whose FFN it replaces (empty = all)" },
	{ "zero_frac", ARB_CONF_FLOAT, "0.3333333333", 0, 0.95, NULL,
	  "fraction of zero trits at init (W_g, W_out, taps)" },
	ARB_CONF_END
};

static void ws_free(dwconv *s)
{
	arb_backend *be = s->be;
	for (int i = 0; i < s->n_layers; i++) {
		be->free(be, s->L[i].g);
		be->free(be, s->L[i].c);
		be->free(be, s->L[i].h);
		s->L[i].g = s->L[i].c = s->L[i].h = NULL;
	}
	be->free(be, s->dh);
	be->free(be, s->dg);
	be->free(be, s->dc);
	s->dh = s->dg = s->dc = NULL;
	s->cap = 0;
}

/* workspace for M rows (grows, never shrinks) */
static arb_status ws_ensure(dwconv *s, int64_t M, arb_error *err)
{
	if (M <= s->cap) return ARB_OK;
	arb_backend *be = s->be;
	size_t bytes = (size_t)M * (size_t)s->D * sizeof(float);
	ws_free(s);
	int ok = 1;
	for (int i = 0; i < s->n_layers; i++) {
		dw_layer *L = &s->L[i];
		ok &= !!(L->g = be->alloc(be, bytes));
		ok &= !!(L->c = be->alloc(be, bytes));
		ok &= !!(L->h = be->alloc(be, bytes));
	}
	ok &= !!(s->dh = be->alloc(be, bytes));
	ok &= !!(s->dg = be->alloc(be, bytes));
	ok &= !!(s->dc = be->alloc(be, bytes));
	if (!ok) {
		ws_free(s);
		return s->host->set_error(err, ARB_ERR_NOMEM,
					  "dwconv: out of %s memory for %lld rows",
					  be->name, (long long)M);
	}
	s->cap = M;
	return ARB_OK;
}

static void dw_destroy(void *self)
{
	dwconv *s = self;
	if (!s) return;
	if (s->be) {
		ws_free(s);
		s->be->free(s->be, s->wt);
		s->be->free(s->be, s->dtaps);
		s->be->free(s->be, s->eye_d);
		s->be->free(s->be, s->eye_k);
	}
	free(s->L);
	free(s);
}

/* identity n x n in backend memory */
static float *eye(arb_backend *be, int n)
{
	float *h = calloc((size_t)n * n, sizeof *h);
	float *d = h ? be->alloc(be, (size_t)n * n * sizeof *d) : NULL;
	if (d) {
		for (int i = 0; i < n; i++) h[(size_t)i * n + i] = 1.0f;
		be->upload(be, d, h, (size_t)n * n * sizeof *d);
	}
	free(h);
	return d;
}

static arb_status dw_create(const arb_host *host, const arb_conf *conf,
			    const char *instance, void **self, arb_error *err)
{
	const arb_model_info *mi = host->model(host);
	dwconv *s = calloc(1, sizeof *s);
	if (!s) return host->set_error(err, ARB_ERR_NOMEM, "dwconv: out of memory");
	s->host = host;
	s->be = host->backend(host);
	s->D = mi->d_model;
	s->k = (int)host->conf_int(conf, "kernel");
	if (s->be->is_device) {
#ifdef ARB_HAVE_CUDA
		s->kern = dw_cuda_kernels();
#else
		dw_destroy(s);
		return host->set_error(err, ARB_ERR_UNSUPPORTED,
				       "[%s] dwconv.so was built without its CUDA "
				       "kernels (no nvcc): rebuild it with nvcc or "
				       "run with device = cpu", instance);
#endif
	} else {
		s->kern = &cpu_kernels;
	}

	int64_t lst[DW_MAX_LAYERS];
	int nl = host->conf_int_list(conf, "layers", lst, DW_MAX_LAYERS);
	s->n_layers = nl ? nl : mi->n_layers;
	if (s->n_layers < 1 || s->n_layers > DW_MAX_LAYERS) {
		dw_destroy(s);
		return host->set_error(err, ARB_ERR_CONFIG, "[%s] layers: %d layers "
				       "(1..%d)", instance, nl ? nl : mi->n_layers,
				       DW_MAX_LAYERS);
	}
	s->L = calloc((size_t)s->n_layers, sizeof *s->L);
	if (!s->L) {
		dw_destroy(s);
		return host->set_error(err, ARB_ERR_NOMEM, "dwconv: out of memory");
	}
	arb_tern_param p;
	memset(&p, 0, sizeof p);
	p.struct_size = sizeof p;
	p.zero_frac = host->conf_float(conf, "zero_frac");
	for (int i = 0; i < s->n_layers; i++) {
		dw_layer *L = &s->L[i];
		char name[32];
		arb_status st;
		L->layer = nl ? (int)lst[i] : i;
		p.fan_in = 0;
		snprintf(name, sizeof name, "L%d.g", L->layer);
		st = host->tern_create(host, instance, name, s->D, s->D, &p, &L->wg, err);
		snprintf(name, sizeof name, "L%d.out", L->layer);
		if (!st)
			st = host->tern_create(host, instance, name, s->D, s->D, &p,
					       &L->wout, err);
		/* each output sums k taps: E0 from fan-in k */
		p.fan_in = s->k;
		snprintf(name, sizeof name, "L%d.taps", L->layer);
		if (!st)
			st = host->tern_create(host, instance, name, s->k, s->D, &p,
					       &L->taps, err);
		if (st) {
			dw_destroy(s);
			return st;
		}
	}
	arb_backend *be = s->be;
	s->wt = be->alloc(be, (size_t)s->D * s->k * sizeof(float));
	s->dtaps = be->alloc(be, (size_t)s->D * s->k * sizeof(float));
	s->eye_d = eye(be, s->D);
	s->eye_k = eye(be, s->k);
	if (!s->wt || !s->dtaps || !s->eye_d || !s->eye_k) {
		dw_destroy(s);
		return host->set_error(err, ARB_ERR_NOMEM, "dwconv: out of %s memory",
				       be->name);
	}
	host->log(host, ARB_LOG_INFO,
		  "gated depthwise causal conv, kernel %d, %d layer(s), %lld "
		  "ternary weights, %s kernels", s->k, s->n_layers,
		  (long long)s->n_layers * (2LL * s->D * s->D + (long long)s->k * s->D),
		  be->is_device ? "CUDA" : "CPU");
	*self = s;
	return ARB_OK;
}

static dw_layer *layer_of(dwconv *s, int layer, arb_error *err)
{
	for (int i = 0; i < s->n_layers; i++)
		if (s->L[i].layer == layer) return &s->L[i];
	s->host->set_error(err, ARB_ERR_INVALID, "dwconv: called for layer %d, "
			   "which is not in its `layers`", layer);
	return NULL;
}

static arb_status dw_forward(void *self, arb_io *io, arb_error *err)
{
	dwconv *s = self;
	arb_backend *be = io->be;
	int64_t M = (int64_t)io->B * io->T;
	dw_layer *L = layer_of(s, io->layer, err);
	if (!L) return ARB_ERR_INVALID;
	arb_status st = ws_ensure(s, M, err);
	if (st) return st;
	/* wt[d][j] = taps[j][d]: row d of I_D times taps^T */
	be->linear_forward(be, L->taps, s->eye_d, s->wt, s->D, 0);
	be->linear_forward(be, L->wg, io->x, L->g, M, 0);
	s->kern->conv_fwd(io->x, s->wt, L->c, io->B, io->T, s->D, s->k);
	be->swiglu_forward(be, L->g, L->c, L->h, M * s->D);
	be->linear_forward(be, L->wout, L->h, io->y, M, 1);
	return ARB_OK;
}

static arb_status dw_backward(void *self, arb_io *io, arb_error *err)
{
	dwconv *s = self;
	arb_backend *be = io->be;
	int64_t M = (int64_t)io->B * io->T;
	dw_layer *L = layer_of(s, io->layer, err);
	if (!L) return ARB_ERR_INVALID;
	if (M > s->cap)
		return s->host->set_error(err, ARB_ERR_INVALID,
					  "dwconv: backward without a training "
					  "forward of %lld rows", (long long)M);
	be->linear_forward(be, L->taps, s->eye_d, s->wt, s->D, 0);
	be->linear_backward_x(be, L->wout, io->dy, s->dh, M, 0);
	be->linear_vote(be, L->wout, L->h, io->dy, M, io->vote);
	be->swiglu_backward(be, L->g, L->c, s->dh, s->dg, s->dc, M * s->D);
	be->linear_vote(be, L->wg, io->x, s->dg, M, io->vote);
	be->linear_backward_x(be, L->wg, s->dg, io->dx, M, 1);
	s->kern->conv_bwd_x(s->dc, s->wt, io->dx, io->B, io->T, s->D, s->k);
	s->kern->tap_grad(s->dc, io->x, s->dtaps, io->B, io->T, s->D, s->k);
	/* dW = I_k^T dtaps = dtaps, voted under the core's rule */
	be->linear_vote(be, L->taps, s->dtaps, s->eye_k, s->k, io->vote);
	return ARB_OK;
}

static const arb_plugin dw_desc = {
	.abi_version = ARB_ABI_VERSION,
	.struct_size = sizeof(arb_plugin),
	.build_sig = ARB_BUILD_SIGNATURE,
	.name = "dwconv",
	.version = "0.1.0",
	.description = "ternary gated depthwise causal convolution over positions "
		       "(FFN slot): y += W_out(silu(W_g x) * dwconv_k(x))",
	.license = "MIT",
	.slot = ARB_SLOT_FFN,
	.schema = dw_schema,
	.create = dw_create,
	.destroy = dw_destroy,
	.forward = dw_forward,
	.backward = dw_backward,
};
ARB_PLUGIN_DEFINE(dw_desc)
