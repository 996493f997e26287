/*
 * plugins/memgram/memgram.c -- MemGram: opt-in conditional memory
 * (ARB_SLOT_RESIDUAL). README.md has the design, the costs and what was
 * measured.
 *
 * For every position t of a sequence (a position is 3 bytes; the last byte
 * of position t is byte 3t+2) and every configured order n (bytes) and hash
 * head h, the byte n-gram ending at byte 3t+2 is hashed to one row of a
 * sparse ternary table (bytes before the start of the sequence read as a pad
 * symbol 256):
 *
 *   idx[k, t] = H_{n,h}(bytes[3t+3-n .. 3t+2]) mod size,   k = o*heads + h
 *   c[k, t]   = min(s[idx], full) / full      (1 when strength_full = 0)
 *   m_t       = sum_k c[k, t] * Table[idx[k, t]]                 [dim]
 *   k_t = Wk m_t,  v_t = Wv m_t                                   [D]
 *   g_t = sigmoid(<rms(x_t), rms(k_t)> / sqrt(D))     (rms(u) = u / rms(u))
 *   x_t += g_t * v_t                 after each block listed in `layers`
 *
 * Tensors (all ternary, through host->tern_create):
 *   table       size x dim, sparse (votes and steps touch used rows only),
 *               shared by all orders, heads and layers; fan_in K
 *   L<l>.wk     D x dim  key projection of block l (fan_in dim)
 *   L<l>.wv     D x dim  value projection (fan_in dim * 4^out_shift)
 * Non-ternary state (saved through save/load): s, one int8 strength per
 * table row in [0, 127]; +1 (saturating) after every training step in which
 * the row was gathered, and every `decay_interval` steps each row loses
 * ceil(s/8). Nothing float persists.
 *
 * Backward: gate_backward gives dv, d rms(x), d rms(k); the backend's
 * rmsnorm_backward turns them into dx (added into io->dx) and dk; Wk, Wv vote
 * and give dm; de[k, t] = c[k, t] dm_t is the straight-through gradient of the
 * gathered rows, and embed_vote sums duplicates and votes once per touched row.
 *
 * The hashing and the strengths live on the host: on a device backend the
 * plugin downloads io->bytes (3M int32) and uploads idx and c (2KM words) per
 * forward. The row-wise steps are mg_kernels (memgram_kern.h): the CPU
 * version below, CUDA in memgram.cu, both calling the same ARB_HD row
 * functions.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "arb/plugin.h"
#include "memgram_kern.h"

#define MG_MAX_ORDERS 8
#define MG_MAX_HEADS 8
#define MG_MAX_LAYERS 64
#define MG_STATE_VERSION 1

/* ------------------------------------------------------------------------
 * hashing (host) */

static uint64_t mg_salt(int n, int head)
{
	return arb_mix64(0x6d656d6772616d00ull ^ ((uint64_t)(unsigned)n << 40) ^
			 ((uint64_t)(unsigned)head << 52));
}

/* row of the n-gram of `n` bytes ending at byte 3p+2 of one sequence `seq`
 * (3T bytes, int32 0..255); bytes before the sequence read as 256 */
static int32_t mg_hash(const int32_t *seq, int p, int n, int head, int64_t size)
{
	uint64_t z = mg_salt(n, head);
	int end = 3 * p + 2;
	for (int j = end - n + 1; j <= end; j++) {
		uint32_t b = j < 0 ? 256u : (uint32_t)(seq[j] & 255);
		z = arb_mix64(z ^ (uint64_t)(b + 1u));
	}
	return (int32_t)(z % (uint64_t)size);
}

/* ------------------------------------------------------------------------
 * CPU reference of the row-wise steps (memgram_kern.h) */

static void cpu_combine_forward(int64_t M, int K, int dim, const float *c,
				const float *e, float *m)
{
	for (int64_t r = 0; r < M; r++) mg_combine_row(r, M, K, dim, c, e, m);
}

static void cpu_combine_backward(int64_t M, int K, int dim, const float *c,
				 const float *dm, float *de)
{
	for (int64_t r = 0; r < M; r++) mg_combine_back_row(r, M, K, dim, c, dm, de);
}

static void cpu_gate_forward(int64_t M, int D, const float *hx, const float *hk,
			     const float *v, float *g, float *y)
{
	for (int64_t r = 0; r < M; r++) mg_gate_row(r, D, hx, hk, v, g, y);
}

static void cpu_gate_backward(int64_t M, int D, const float *dy,
			      const float *hx, const float *hk, const float *v,
			      const float *g, float *dv, float *dhx, float *dhk)
{
	for (int64_t r = 0; r < M; r++)
		mg_gate_back_row(r, D, dy, hx, hk, v, g, dv, dhx, dhk);
}

static int cpu_check(char *msg, size_t cap)
{
	(void)msg;
	(void)cap;
	return 0;
}

static const mg_kernels cpu_kernels = {
	cpu_combine_forward, cpu_combine_backward, cpu_gate_forward,
	cpu_gate_backward, cpu_check,
};

/* ------------------------------------------------------------------------
 * instance */

/* per-layer backend workspace for cm positions: X(type, field, elements) */
#define MG_WS_FIELDS(X) \
	X(int32_t, idx, K * cm)      /* gathered rows */ \
	X(float, c, K * cm)          /* their strength weights */ \
	X(float, m, cm * dim)        /* combined memory */ \
	X(float, xs, cm * D)         /* copy of x (y == x in place) */ \
	X(float, hx, cm * D)         /* rms(x) */ \
	X(float, rx, cm)             /* 1/rms(x) */ \
	X(float, k, cm * D)          /* key */ \
	X(float, hk, cm * D)         /* rms(k) */ \
	X(float, rk, cm)             \
	X(float, v, cm * D)          /* value */ \
	X(float, g, cm)              /* gate */

/* shared scratch, used within one call */
#define MG_SCRATCH_FIELDS(X) \
	X(float, e, K * cm * dim)    /* gathered rows; backward: their grads */ \
	X(float, dm, cm * dim)       \
	X(float, dk, cm * D)         \
	X(float, dv, cm * D)         \
	X(float, dhx, cm * D)        \
	X(float, dhk, cm * D)

typedef struct mg_layer {
	int layer;
	arb_tern *wk, *wv;
	int64_t cap;
	arb_backend *ws_be;
#define X(type, f, n) type *f;
	MG_WS_FIELDS(X)
#undef X
	int32_t *hidx;  /* host copies of idx, c */
	float *hc;
	int64_t last_m;
	int have_forward;
} mg_layer;

typedef struct memgram {
	const arb_host *host;
	char instance[64];
	int D, dim, heads, n_orders, K;
	int orders[MG_MAX_ORDERS];
	int64_t size;
	int full;                /* strength_full */
	int64_t decay_interval;
	int out_shift;
	arb_tern *table;
	int8_t *strength;        /* size, host: the saved int8 state */
	uint8_t *touched;        /* size, host: gathered since after_step */
	int32_t *tlist;          /* touched rows (unique) */
	int64_t n_touched, tcap;
	int n_layers;
	mg_layer *L;
	/* scratch */
	arb_backend *sc_be;
	int64_t sc_cap;
#define X(type, f, n) type *f;
	MG_SCRATCH_FIELDS(X)
#undef X
	int32_t *hbytes;         /* host copy of io->bytes (device backend) */
	int64_t hb_cap;
	/* metrics of the last training/eval forward (host values) */
	double last_c;           /* mean c over gathered rows */
	const float *last_g;     /* backend pointer, last_gm rows */
	arb_backend *last_g_be;
	int64_t last_gm;
} memgram;

static const arb_conf_key memgram_schema[] = {
	{ "layers", ARB_CONF_INT_LIST, "0", 0, 4095, NULL,
	  "blocks after which the memory is added to the residual stream "
	  "(each gets its own Wk, Wv; the table is shared)" },
	{ "orders", ARB_CONF_INT_LIST, "3,5,8", 1, 64, NULL,
	  "n-gram lengths in bytes, each ending at the position's last byte "
	  "(at most 8 distinct values)" },
	{ "heads", ARB_CONF_INT, "2", 1, MG_MAX_HEADS, NULL,
	  "hash functions per order (rows gathered per position = orders x heads)" },
	{ "size", ARB_CONF_INT, "65536", 16, 1 << 26, NULL,
	  "rows of the shared ternary table" },
	{ "dim", ARB_CONF_INT, "64", 4, 4096, NULL,
	  "width of the table rows (projected to d_model by Wk, Wv)" },
	{ "strength_full", ARB_CONF_INT, "8", 0, 127, NULL,
	  "a row contributes min(s, strength_full)/strength_full of itself, s its "
	  "int8 strength (0 = every row contributes fully)" },
	{ "decay_interval", ARB_CONF_INT, "100", 0, 1000000000, NULL,
	  "every this many steps each row's strength loses ceil(s/8) (0 = never)" },
	{ "out_shift", ARB_CONF_INT, "1", 0, 8, NULL,
	  "Wv's exponents start this much below the fan-in init (output quieter by "
	  "2^-out_shift)" },
	ARB_CONF_END
};

static const mg_kernels *kernels_for(const memgram *s, arb_backend *be,
				     arb_error *err)
{
	if (!be->is_device) return &cpu_kernels;
#if defined(ARB_HAVE_CUDA) && !defined(MEMGRAM_TEST_INCLUDE)
	(void)err;
	return memgram_cuda_kernels();
#else
	s->host->set_error(err, ARB_ERR_UNSUPPORTED,
			   "[%s] backend '%s' is a device backend but the memgram "
			   "plugin was built without CUDA", s->instance, be->name);
	return NULL;
#endif
}

static void layer_ws_free(mg_layer *L)
{
	arb_backend *be = L->ws_be;
	if (be) {
#define X(type, f, n) if (L->f) be->free(be, L->f); L->f = NULL;
		MG_WS_FIELDS(X)
#undef X
	}
	free(L->hidx);
	free(L->hc);
	L->hidx = NULL;
	L->hc = NULL;
	L->cap = 0;
	L->ws_be = NULL;
}

static void scratch_free(memgram *s)
{
	arb_backend *be = s->sc_be;
	if (be) {
#define X(type, f, n) if (s->f) be->free(be, s->f); s->f = NULL;
		MG_SCRATCH_FIELDS(X)
#undef X
	}
	s->sc_cap = 0;
	s->sc_be = NULL;
}

static arb_status ws_ensure(memgram *s, mg_layer *L, arb_backend *be, int64_t M,
			    arb_error *err)
{
	int64_t K = s->K, dim = s->dim, D = s->D;
	int ok = 1;
	if (L->ws_be != be || M > L->cap) {
		layer_ws_free(L);
		int64_t cm = M;
		L->ws_be = be;
#define X(type, f, n) \
	if (ok) { L->f = be->alloc(be, (size_t)(n) * sizeof(type)); ok = L->f != NULL; }
		MG_WS_FIELDS(X)
#undef X
		L->hidx = malloc((size_t)(K * cm) * sizeof *L->hidx);
		L->hc = malloc((size_t)(K * cm) * sizeof *L->hc);
		ok = ok && L->hidx && L->hc;
		if (!ok) {
			layer_ws_free(L);
			goto nomem;
		}
		L->cap = cm;
	}
	if (s->sc_be != be || M > s->sc_cap) {
		scratch_free(s);
		int64_t cm = M;
		s->sc_be = be;
#define X(type, f, n) \
	if (ok) { s->f = be->alloc(be, (size_t)(n) * sizeof(type)); ok = s->f != NULL; }
		MG_SCRATCH_FIELDS(X)
#undef X
		if (!ok) {
			scratch_free(s);
			goto nomem;
		}
		s->sc_cap = cm;
	}
	if (be->is_device && 3 * M > s->hb_cap) {
		free(s->hbytes);
		s->hbytes = malloc((size_t)(3 * M) * sizeof *s->hbytes);
		if (!s->hbytes) {
			s->hb_cap = 0;
			goto nomem;
		}
		s->hb_cap = 3 * M;
	}
	return ARB_OK;
nomem:
	return s->host->set_error(err, ARB_ERR_NOMEM,
				  "[%s] out of %s memory for %lld positions",
				  s->instance, be->name, (long long)M);
}

static void memgram_destroy(void *self)
{
	memgram *s = self;
	if (!s) return;
	for (int i = 0; i < s->n_layers; i++) layer_ws_free(&s->L[i]);
	scratch_free(s);
	free(s->L);
	free(s->strength);
	free(s->touched);
	free(s->tlist);
	free(s->hbytes);
	free(s);
}

static arb_tern_param tparam(int64_t fan_in, int sparse)
{
	arb_tern_param p;
	memset(&p, 0, sizeof p);
	p.struct_size = sizeof p;
	p.zero_frac = -1.0;
	p.fan_in = fan_in;
	p.sparse = sparse;
	return p;
}

static arb_status memgram_create(const arb_host *host, const arb_conf *conf,
				 const char *instance, void **self,
				 arb_error *err)
{
	const arb_model_info *mi = host->model(host);
	memgram *s = calloc(1, sizeof *s);
	if (!s) return host->set_error(err, ARB_ERR_NOMEM, "[%s] out of memory",
				       instance);
	*self = s;
	s->host = host;
	snprintf(s->instance, sizeof s->instance, "%s", instance);
	s->D = mi->d_model;
	s->dim = (int)host->conf_int(conf, "dim");
	s->heads = (int)host->conf_int(conf, "heads");
	s->size = host->conf_int(conf, "size");
	s->full = (int)host->conf_int(conf, "strength_full");
	s->decay_interval = host->conf_int(conf, "decay_interval");
	s->out_shift = (int)host->conf_int(conf, "out_shift");
	if (s->D <= 0)
		return host->set_error(err, ARB_ERR_CONFIG, "[%s] model width %d",
				       instance, s->D);

	int64_t ord[MG_MAX_ORDERS + 1];
	int no = host->conf_int_list(conf, "orders", ord, MG_MAX_ORDERS + 1);
	if (no < 1 || no > MG_MAX_ORDERS)
		return host->set_error(err, ARB_ERR_CONFIG,
				       "[%s] orders: %d values (1..%d distinct "
				       "n-gram lengths)", instance, no, MG_MAX_ORDERS);
	for (int i = 0; i < no; i++) {
		for (int j = 0; j < i; j++)
			if (ord[j] == ord[i])
				return host->set_error(err, ARB_ERR_CONFIG,
						       "[%s] orders: %lld listed twice",
						       instance, (long long)ord[i]);
		if (mi->ctx > 0 && ord[i] > 3 * (int64_t)mi->ctx)
			return host->set_error(err, ARB_ERR_CONFIG,
					       "[%s] orders: %lld bytes is longer than "
					       "a context (%d bytes)", instance,
					       (long long)ord[i], 3 * mi->ctx);
		s->orders[i] = (int)ord[i];
	}
	s->n_orders = no;
	s->K = no * s->heads;

	int64_t lst[MG_MAX_LAYERS + 1];
	int nl = host->conf_int_list(conf, "layers", lst, MG_MAX_LAYERS + 1);
	if (nl > MG_MAX_LAYERS)
		return host->set_error(err, ARB_ERR_CONFIG,
				       "[%s] layers: %d blocks (at most %d)",
				       instance, nl, MG_MAX_LAYERS);
	/* empty list: the core runs a residual component after the last block */
	s->n_layers = nl ? nl : 1;
	s->L = calloc((size_t)s->n_layers, sizeof *s->L);
	s->strength = calloc((size_t)s->size, 1);
	s->touched = calloc((size_t)s->size, 1);
	if (!s->L || !s->strength || !s->touched)
		return host->set_error(err, ARB_ERR_NOMEM, "[%s] out of memory",
				       instance);

	arb_tern_param tp = tparam(s->K, 1);
	arb_status st = host->tern_create(host, instance, "table", s->size,
					  s->dim, &tp, &s->table, err);
	if (st) return st;
	for (int i = 0; i < s->n_layers; i++) {
		mg_layer *L = &s->L[i];
		L->layer = nl ? (int)lst[i] : (mi->n_layers > 0 ? mi->n_layers - 1 : -1);
		if (nl && mi->n_layers > 0 && (L->layer < 0 || L->layer >= mi->n_layers))
			return host->set_error(err, ARB_ERR_CONFIG,
					       "[%s] layers: %d is not a block index "
					       "(model has %d layers)", instance,
					       L->layer, mi->n_layers);
		for (int j = 0; j < i; j++)
			if (s->L[j].layer == L->layer)
				return host->set_error(err, ARB_ERR_CONFIG,
						       "[%s] layers: %d listed twice",
						       instance, L->layer);
		char name[48];
		arb_tern_param pk = tparam(s->dim, 0);
		snprintf(name, sizeof name, "L%d.wk", L->layer);
		if ((st = host->tern_create(host, instance, name, s->D, s->dim, &pk,
					    &L->wk, err)))
			return st;
		arb_tern_param pv = tparam((int64_t)s->dim << (2 * s->out_shift), 0);
		snprintf(name, sizeof name, "L%d.wv", L->layer);
		if ((st = host->tern_create(host, instance, name, s->D, s->dim, &pv,
					    &L->wv, err)))
			return st;
	}
	char ol[64];
	int o = 0;
	for (int i = 0; i < no && o < (int)sizeof ol; i++)
		o += snprintf(ol + o, sizeof ol - (size_t)o, "%s%d", i ? "," : "",
			      s->orders[i]);
	host->log(host, ARB_LOG_INFO,
		  "MemGram: %d block(s), orders %s x %d heads -> %d rows/position "
		  "of a %lld x %d sparse table, D=%d, strength_full=%d, "
		  "decay every %lld steps", s->n_layers, ol, s->heads, s->K,
		  (long long)s->size, s->dim, s->D, s->full,
		  (long long)s->decay_interval);
	return ARB_OK;
}

static mg_layer *layer_of(memgram *s, int layer)
{
	for (int i = 0; i < s->n_layers; i++)
		if (s->L[i].layer == layer) return &s->L[i];
	return NULL;
}

/* idx and c of all K*M gathers (host) from the input bytes (host) */
static void mg_index(const memgram *s, const int32_t *bytes, int B, int T,
		     int32_t *idx, float *c, double *csum)
{
	int64_t M = (int64_t)B * T;
	double acc = 0;
	for (int o = 0; o < s->n_orders; o++)
		for (int h = 0; h < s->heads; h++) {
			int64_t k = (int64_t)o * s->heads + h;
			for (int b = 0; b < B; b++)
				for (int p = 0; p < T; p++) {
					int64_t i = k * M + (int64_t)b * T + p;
					int32_t r = mg_hash(bytes + (int64_t)b * 3 * T, p,
							    s->orders[o], h, s->size);
					idx[i] = r;
					int st = s->strength[r];
					float w = s->full == 0 ? 1.0f
						: (float)(st < s->full ? st : s->full) /
						  (float)s->full;
					c[i] = w;
					acc += w;
				}
		}
	if (csum) *csum = acc;
}

static arb_status kernels_ok(memgram *s, const mg_kernels *K, const char *what,
			     arb_error *err)
{
	char msg[256];
	if (K->check(msg, sizeof msg) == 0) return ARB_OK;
	return s->host->set_error(err, ARB_ERR_CUDA, "[%s] %s: %s", s->instance,
				  what, msg);
}

static arb_status memgram_forward(void *self, arb_io *io, arb_error *err)
{
	memgram *s = self;
	arb_backend *be = io->be;
	mg_layer *L = layer_of(s, io->layer);
	if (!L)
		return s->host->set_error(err, ARB_ERR_INVALID,
					  "[%s] forward called for layer %d, which "
					  "is not in `layers`", s->instance, io->layer);
	if (io->D != s->D)
		return s->host->set_error(err, ARB_ERR_INVALID,
					  "[%s] io width %d != model width %d",
					  s->instance, io->D, s->D);
	if (!io->bytes)
		return s->host->set_error(err, ARB_ERR_INVALID,
					  "[%s] no input bytes in io", s->instance);
	const mg_kernels *K = kernels_for(s, be, err);
	if (!K) return ARB_ERR_UNSUPPORTED;
	int64_t M = (int64_t)io->B * io->T, D = s->D;
	if (M <= 0) return ARB_OK;
	arb_status st = ws_ensure(s, L, be, M, err);
	if (st) return st;

	/* keys (host) */
	const int32_t *hb = io->bytes;
	if (be->is_device) {
		be->download(be, s->hbytes, io->bytes, (size_t)(3 * M) * sizeof(int32_t));
		hb = s->hbytes;
	}
	double csum = 0;
	mg_index(s, hb, io->B, io->T, L->hidx, L->hc, &csum);
	s->last_c = csum / (double)(s->K * M);
	be->upload(be, L->idx, L->hidx, (size_t)(s->K * M) * sizeof(int32_t));
	be->upload(be, L->c, L->hc, (size_t)(s->K * M) * sizeof(float));

	/* query side: rms(x) from a copy (y == x is written below) */
	be->copy(be, L->xs, io->x, (size_t)(M * D) * sizeof(float));
	be->rmsnorm_forward(be, NULL, L->xs, L->hx, L->rx, M, D);
	/* memory: gather, weight, combine, project */
	be->embed_forward(be, s->table, L->idx, s->K * M, s->e, 0);
	K->combine_forward(M, s->K, s->dim, L->c, s->e, L->m);
	be->linear_forward(be, L->wk, L->m, L->k, M, 0);
	be->rmsnorm_forward(be, NULL, L->k, L->hk, L->rk, M, D);
	be->linear_forward(be, L->wv, L->m, L->v, M, 0);
	K->gate_forward(M, (int)D, L->hx, L->hk, L->v, L->g, io->y);
	if ((st = kernels_ok(s, K, "forward", err))) return st;
	L->last_m = M;
	L->have_forward = io->training;
	s->last_g = L->g;
	s->last_g_be = be;
	s->last_gm = M;
	return ARB_OK;
}

static void mark_touched(memgram *s, const int32_t *idx, int64_t n)
{
	for (int64_t i = 0; i < n; i++) {
		int32_t r = idx[i];
		if (s->touched[r]) continue;
		if (s->n_touched == s->tcap) {
			int64_t nc = s->tcap ? 2 * s->tcap : 4096;
			int32_t *nl = realloc(s->tlist, (size_t)nc * sizeof *nl);
			if (!nl) return; /* strengths of the rest wait a step */
			s->tlist = nl;
			s->tcap = nc;
		}
		s->touched[r] = 1;
		s->tlist[s->n_touched++] = r;
	}
}

static arb_status memgram_backward(void *self, arb_io *io, arb_error *err)
{
	memgram *s = self;
	arb_backend *be = io->be;
	mg_layer *L = layer_of(s, io->layer);
	if (!L)
		return s->host->set_error(err, ARB_ERR_INVALID,
					  "[%s] backward called for layer %d, which "
					  "is not in `layers`", s->instance, io->layer);
	int64_t M = (int64_t)io->B * io->T, D = s->D;
	if (M <= 0) return ARB_OK;
	if (!L->have_forward || L->last_m != M || L->ws_be != be)
		return s->host->set_error(err, ARB_ERR_INVALID,
					  "[%s] backward of layer %d without a "
					  "matching training forward (%lld positions)",
					  s->instance, io->layer, (long long)M);
	const mg_kernels *K = kernels_for(s, be, err);
	if (!K) return ARB_ERR_UNSUPPORTED;
	const arb_vote *v = io->vote;

	/* gate: reads dy (== dx in place) before anything is added to dx */
	K->gate_backward(M, (int)D, io->dy, L->hx, L->hk, L->v, L->g, s->dv,
			 s->dhx, s->dhk);
	be->rmsnorm_backward(be, NULL, L->xs, L->rx, s->dhx, io->dx, M, D, 1);
	be->rmsnorm_backward(be, NULL, L->k, L->rk, s->dhk, s->dk, M, D, 0);
	/* projections */
	if (v) {
		be->linear_vote(be, L->wk, L->m, s->dk, M, v);
		be->linear_vote(be, L->wv, L->m, s->dv, M, v);
	}
	be->linear_backward_x(be, L->wk, s->dk, s->dm, M, 0);
	be->linear_backward_x(be, L->wv, s->dv, s->dm, M, 1);
	/* table: straight-through sums into the touched rows */
	K->combine_backward(M, s->K, s->dim, L->c, s->dm, s->e);
	if (v) be->embed_vote(be, s->table, L->idx, s->K * M, s->e, v);
	mark_touched(s, L->hidx, s->K * M);
	L->have_forward = 0;
	return kernels_ok(s, K, "backward", err);
}

/* strengths: +1 for the rows gathered in this step's training passes, then
 * every decay_interval steps s -= ceil(s/8) for every row */
static arb_status memgram_after_step(void *self, uint64_t step, arb_error *err)
{
	memgram *s = self;
	(void)err;
	for (int64_t i = 0; i < s->n_touched; i++) {
		int32_t r = s->tlist[i];
		if (s->strength[r] < 127) s->strength[r]++;
		s->touched[r] = 0;
	}
	s->n_touched = 0;
	if (s->decay_interval > 0 && step > 0 &&
	    step % (uint64_t)s->decay_interval == 0)
		for (int64_t r = 0; r < s->size; r++)
			s->strength[r] = (int8_t)(s->strength[r] -
						  ((s->strength[r] + 7) >> 3));
	return ARB_OK;
}

/* ------------------------------------------------------------------------
 * state, metrics */

static arb_status memgram_save(void *self, const arb_state_io *io,
			       arb_error *err)
{
	memgram *s = self;
	int64_t meta[4] = { MG_STATE_VERSION, s->size, s->K, s->dim };
	arb_status st = io->write(io->ctx, "meta", meta, sizeof meta);
	if (!st) st = io->write(io->ctx, "strength", s->strength, (size_t)s->size);
	if (st)
		return s->host->set_error(err, st, "[%s] cannot write the strength "
					  "state", s->instance);
	return ARB_OK;
}

static arb_status memgram_load(void *self, const arb_state_io *io,
			       arb_error *err)
{
	memgram *s = self;
	int64_t meta[4];
	arb_status st = io->read(io->ctx, "meta", meta, sizeof meta);
	if (st)
		return s->host->set_error(err, ARB_ERR_FORMAT,
					  "[%s] checkpoint has no memgram state",
					  s->instance);
	if (meta[0] != MG_STATE_VERSION || meta[1] != s->size || meta[2] != s->K ||
	    meta[3] != s->dim)
		return s->host->set_error(err, ARB_ERR_FORMAT,
					  "[%s] checkpoint state is version %lld, "
					  "size %lld, %lld rows/position, dim %lld; "
					  "this instance: %d, %lld, %d, %d",
					  s->instance, (long long)meta[0],
					  (long long)meta[1], (long long)meta[2],
					  (long long)meta[3], MG_STATE_VERSION,
					  (long long)s->size, s->K, s->dim);
	int8_t *tmp = malloc((size_t)s->size);
	if (!tmp) return s->host->set_error(err, ARB_ERR_NOMEM, "[%s] out of memory",
					    s->instance);
	st = io->read(io->ctx, "strength", tmp, (size_t)s->size);
	if (st) {
		free(tmp);
		return s->host->set_error(err, ARB_ERR_FORMAT,
					  "[%s] strength record missing or resized",
					  s->instance);
	}
	for (int64_t r = 0; r < s->size; r++)
		if (tmp[r] < 0) {
			free(tmp);
			return s->host->set_error(err, ARB_ERR_FORMAT,
						  "[%s] strength of row %lld is "
						  "negative", s->instance,
						  (long long)r);
		}
	memcpy(s->strength, tmp, (size_t)s->size);
	free(tmp);
	for (int64_t i = 0; i < s->n_touched; i++) s->touched[s->tlist[i]] = 0;
	s->n_touched = 0;
	return ARB_OK;
}

/* gate = mean g of the last forward; c = mean strength weight of its gathers;
 * live = fraction of table rows with strength > 0 */
static int memgram_metrics(void *self, char *buf, size_t cap)
{
	memgram *s = self;
	if (!s || cap == 0) return 0;
	double gm = 0;
	if (s->last_gm > 0 && s->last_g_be) {
		float *g = malloc((size_t)s->last_gm * sizeof *g);
		if (g) {
			s->last_g_be->download(s->last_g_be, g, s->last_g,
					       (size_t)s->last_gm * sizeof *g);
			for (int64_t i = 0; i < s->last_gm; i++) gm += g[i];
			gm /= (double)s->last_gm;
			free(g);
		}
	}
	int64_t live = 0;
	for (int64_t r = 0; r < s->size; r++) live += s->strength[r] > 0;
	int n = snprintf(buf, cap, "%s_gate=%.3f %s_c=%.3f %s_live=%.3f",
			 s->instance, gm, s->instance, s->last_c, s->instance,
			 (double)live / (double)s->size);
	if (n < 0) return 0;
	return (size_t)n >= cap ? (int)cap - 1 : n;
}

static const arb_plugin memgram_plugin = {
	ARB_ABI_VERSION,
	sizeof(arb_plugin),
	ARB_BUILD_SIGNATURE,
	"memgram",
	"0.1.0",
	"MemGram: hashed byte n-gram keys -> sparse ternary table, int8 "
	"strength/decay, gated injection into the residual stream",
	"MIT",
	ARB_SLOT_RESIDUAL,
	memgram_schema,
	memgram_create,
	memgram_destroy,
	memgram_forward,
	memgram_backward,
	memgram_save,
	memgram_load,
	memgram_after_step,
	memgram_metrics,
};

#ifndef MEMGRAM_TEST_INCLUDE
ARB_PLUGIN_DEFINE(memgram_plugin)
#endif
