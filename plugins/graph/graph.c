/*
 * plugins/graph/graph.c -- MoEGraph (ARB_SLOT_RESIDUAL, after the last
 * block): a graph over the codes of a VQ instance, message passing over a
 * bounded, data-built edge list, an ACT loop, and the result gathered back to
 * the positions (README.md has the design; graph_core.h the edge list and the
 * CPU reference of the small kernels; graph.cu the CUDA kernels).
 *
 * Tensors ("<instance>.<name>", ternary, through host->tern_create):
 *   nodes      V x Dn  (sparse table; V = `nodes`)     node embeddings
 *   in         Dn x D                                 position -> node input
 *   h<k>.msg   Dn x Dn   (hop k = 0..hops-1)          message projection Wm
 *   h<k>.upd   Dn x Dn                                update projection Wu
 *   h<k>.la    r x Dn, h<k>.lb  Dn x r                hop-LoRA A_k, B_k
 *   out        D x Dn                                 node -> residual stream
 *   halt       1 x D                                  halting head
 *
 * Forward over the active subgraph (nodes of the batch's codes plus their
 * edge neighbours; local ids; never the whole table):
 *   S0 = nodes[A] + mean_{m: code m = v} (x Wi^T)[m]
 *   ACT iteration i = 0..max_iters-1, hop k = 0..hops-1 (s = i*hops + k):
 *     Mg_s = S_s Wm_k^T
 *     Ag_s[v] = sum_{edges u->v} sign/indeg(v) * Mg_s[u]      (csr kernel)
 *     Z_s = Ag_s A_k^T;   S_{s+1} = S_s + Ag_s Wu_k^T + Z_s B_k^T
 *   then P_i = S[pos]  (gather), O_i = P_i Wo^T, E_i = O_i (+ experts(O_i)),
 *     p_i = sigmoid(E_i Wh^T + halt_bias); Graves ACT with threshold
 *     `halt_threshold`: w_i = p_i while cum + p_i < thr, remainder
 *     R = 1 - cum at the halting iteration N (or the last iteration);
 *   y += sum_i w_i E_i;  aux = ponder * mean_m (N(m) + R(m)).
 * Backward is the exact adjoint of that (node states carry across iterations
 * and hops; the gather's adjoint sums duplicates; the halting weights get
 * dp_j = dw_j - dw_N - ponder/M for j < N). Experts are recomputed before
 * their backward (the instance keeps one activation set; it must be one the
 * trunk does not run, e.g. a moe section with trunk = false: the host
 * refuses a call into a component at a block where the trunk runs it).
 * Edge signs learn from g_e = dL/dsign_e (at fixed 1/indeg), summed over the
 * hops and iterations of a step: vote -= sign(g_e) (int8, saturating); in
 * after_step |vote| >= edge_threshold moves the sign one step.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "arb/plugin.h"
#include "graph_core.h"

#define GRAPH_MAX_HOPS 8
#define GRAPH_MAX_ITERS 16

/* workspace slots (backend memory) */
enum {
	W_XI, W_S, W_MG, W_AG, W_Z, W_P, W_O, W_E, W_ZH, W_PH, W_W, W_CUM, W_RUN,
	W_NST, W_RHO, W_NRUN, W_DW, W_DE, W_DO, W_DP, W_DH, W_DA, W_DM, W_DZ,
	W_DZH, W_DXI, W_EG, W_ON, W_RS, W_DON,
	/* device copies of the active subgraph */
	W_NODE, W_POS, W_PPTR, W_ONES, W_PINV, W_NPTR, W_NPOS, W_NINV, W_EPTR,
	W_ESRC, W_EDST, W_EW, W_ESC, W_TPTR, W_TDST, W_TW,
	W_COUNT
};

typedef struct graph {
	int out_zero;            /* out_init = zero */
	const arb_host *host;
	char instance[64];
	char codes_name[128];
	char experts[64];
	int experts_layer;
	int experts_ok;       /* `experts` is set: mix them in every iteration */
	int experts_norm;     /* experts_input = norm: they get rmsnorm(O) */
	int D, Dn, hops, r, max_iters, window, edge_thr;
	int64_t nodes, decay_every;
	float thr, bias, tau;
	arb_tern *emb, *win, *wout, *whalt;
	arb_tern *wm[GRAPH_MAX_HOPS], *wu[GRAPH_MAX_HOPS];
	arb_tern *la[GRAPH_MAX_HOPS], *lb[GRAPH_MAX_HOPS];
	gedges E;
	gactive A;
	float *eg_h;          /* host copy of the edge gradients */
	int32_t *codes_h;     /* codes of the last forward (host) */
	int64_t codes_cap;
	int have_codes;       /* a training forward's codes await after_step */
	int B, T;
	/* forward record */
	arb_backend *be;
	int fwd_ok;
	int n_it;
	int64_t M, nA, nE;
	void *w[W_COUNT];
	size_t wcap[W_COUNT];
	/* metrics */
	double ponder_mean, mean_iters;
	int64_t moved;
} graph;

static const arb_conf_key graph_schema[] = {
	{ "vq", ARB_CONF_STRING, "shared", 0, 0, NULL,
	  "VQ instance whose codes are the nodes (reads vq.<vq>.codes)" },
	{ "nodes", ARB_CONF_INT, "4096", 2, 2147483647.0, NULL,
	  "node table rows (the VQ codebook size)" },
	{ "node_dim", ARB_CONF_INT, "64", 4, 4096, NULL, "node state width Dn" },
	{ "hops", ARB_CONF_INT, "2", 1, GRAPH_MAX_HOPS, NULL,
	  "message-passing hops per ACT iteration" },
	{ "rank", ARB_CONF_INT, "4", 1, 256, NULL, "hop-LoRA rank r" },
	{ "max_edges", ARB_CONF_INT, "65536", 1, 268435456.0, NULL,
	  "capacity of the active edge list" },
	{ "window", ARB_CONF_INT, "4", 1, 1024, NULL,
	  "codes co-occurring within this many positions raise an edge" },
	{ "decay_every", ARB_CONF_INT, "100", 1, 1e12, NULL,
	  "every this many steps all edge scores drop by 1 (0 -> removed)" },
	{ "edge_threshold", ARB_CONF_INT, "8", 1, 127, NULL,
	  "edge sign votes needed to move a sign one step" },
	{ "max_iters", ARB_CONF_INT, "4", 1, GRAPH_MAX_ITERS, NULL,
	  "ACT iterations at most" },
	{ "halt_threshold", ARB_CONF_FLOAT, "0.99", 0.01, 1.0, NULL,
	  "ACT halts when the cumulated halting probability reaches this" },
	{ "halt_bias", ARB_CONF_FLOAT, "0", -100, 100, NULL,
	  "added to the halting logit (+30: halt at once, -30: run all)" },
	{ "ponder", ARB_CONF_FLOAT, "0.01", 0, 100, NULL,
	  "ponder cost weight tau (aux loss = tau * mean(N + R))" },
	{ "experts", ARB_CONF_STRING, "", 0, 0, NULL,
	  "instance called for expert mixing in each ACT iteration (empty: "
	  "none), one the trunk does not run, e.g. [moe:NAME] with trunk = "
	  "false" },
	{ "experts_layer", ARB_CONF_INT, "-1", -1, 4095, NULL,
	  "io->layer passed to the experts (-1: the graph's own)" },
	{ "experts_input", ARB_CONF_ENUM, "norm", 0, 0, "norm|raw",
	  "what the experts get: norm = rmsnorm(O) (unit rms, as an FFN slot "
	  "gets its block's normalized input; E = O + experts(rmsnorm(O))) or "
	  "raw = O itself (E = O + experts(O))" },
	{ "out_init", ARB_CONF_ENUM, "zero", 0, 0, "random|zero",
	  "initial trits of the output projection `out`: random (trunk "
	  "density) or zero (the graph adds nothing until votes flip them)" },
	ARB_CONF_END
};

static void graph_destroy(void *self)
{
	graph *g = self;
	if (!g) return;
	for (int i = 0; i < W_COUNT; i++)
		if (g->w[i] && g->be) g->be->free(g->be, g->w[i]);
	gedge_free(&g->E);
	gactive_free(&g->A);
	free(g->eg_h);
	free(g->codes_h);
	free(g);
}

static const graph_kernels *kern_of(arb_backend *be)
{
#ifdef ARB_HAVE_CUDA
	if (be->is_device) return graph_cuda_kernels();
#endif
	return be->is_device ? NULL : &graph_cpu_kernels;
}

static arb_status mk(graph *g, const char *name, int64_t rows, int64_t cols,
		     int64_t fan_in, int sparse, arb_tern **out, arb_error *err)
{
	arb_tern_param p;
	memset(&p, 0, sizeof p);
	p.struct_size = sizeof p;
	p.zero_frac = g->out_zero && strcmp(name, "out") == 0 ? 1.0 : -1;
	p.sparse = sparse;
	p.fan_in = fan_in;
	return g->host->tern_create(g->host, g->instance, name, rows, cols, &p, out,
				    err);
}

static arb_status graph_create(const arb_host *host, const arb_conf *conf,
			       const char *instance, void **self,
			       arb_error *err)
{
	graph *g = calloc(1, sizeof *g);
	if (!g) return host->set_error(err, ARB_ERR_NOMEM, "graph: out of memory");
	g->host = host;
	snprintf(g->instance, sizeof g->instance, "%s", instance);
	snprintf(g->codes_name, sizeof g->codes_name, "vq.%s.codes",
		 host->conf_str(conf, "vq"));
	snprintf(g->experts, sizeof g->experts, "%s", host->conf_str(conf, "experts"));
	g->experts_layer = (int)host->conf_int(conf, "experts_layer");
	g->experts_ok = g->experts[0] != 0;
	g->experts_norm = strcmp(host->conf_str(conf, "experts_input"), "norm") == 0;
	g->D = host->model(host)->d_model;
	g->nodes = host->conf_int(conf, "nodes");
	g->Dn = (int)host->conf_int(conf, "node_dim");
	g->hops = (int)host->conf_int(conf, "hops");
	g->r = (int)host->conf_int(conf, "rank");
	g->window = (int)host->conf_int(conf, "window");
	g->decay_every = host->conf_int(conf, "decay_every");
	g->edge_thr = (int)host->conf_int(conf, "edge_threshold");
	g->max_iters = (int)host->conf_int(conf, "max_iters");
	g->thr = (float)host->conf_float(conf, "halt_threshold");
	g->bias = (float)host->conf_float(conf, "halt_bias");
	g->tau = (float)host->conf_float(conf, "ponder");
	g->out_zero = strcmp(host->conf_str(conf, "out_init"), "zero") == 0;
	g->be = host->backend(host);
	int64_t cap = host->conf_int(conf, "max_edges");
	const arb_model_info *mi = host->model(host);
	int64_t Mmax = (int64_t)(mi->batch > 0 ? mi->batch : 1) *
		       (mi->ctx > 0 ? mi->ctx : 1);
	int64_t headroom = Mmax * g->window;
	if (headroom > cap) headroom = cap;
	if (headroom < 1024) headroom = 1024;
	arb_status s = ARB_OK;
	if (gedge_init(&g->E, cap, headroom)) {
		s = host->set_error(err, ARB_ERR_NOMEM,
				    "[%s] out of memory for %lld edges", instance,
				    (long long)cap);
		goto fail;
	}
	int Dn = g->Dn, D = g->D;
	if ((s = mk(g, "nodes", g->nodes, Dn, 1, 1, &g->emb, err))) goto fail;
	if ((s = mk(g, "in", Dn, D, 0, 0, &g->win, err))) goto fail;
	for (int k = 0; k < g->hops; k++) {
		char n[32];
		snprintf(n, sizeof n, "h%d.msg", k);
		if ((s = mk(g, n, Dn, Dn, 0, 0, &g->wm[k], err))) goto fail;
		snprintf(n, sizeof n, "h%d.upd", k);
		if ((s = mk(g, n, Dn, Dn, 4 * (int64_t)Dn, 0, &g->wu[k], err))) goto fail;
		snprintf(n, sizeof n, "h%d.la", k);
		if ((s = mk(g, n, g->r, Dn, 0, 0, &g->la[k], err))) goto fail;
		snprintf(n, sizeof n, "h%d.lb", k);
		if ((s = mk(g, n, Dn, g->r, 4 * (int64_t)g->r, 0, &g->lb[k], err)))
			goto fail;
	}
	if ((s = mk(g, "out", D, Dn, 16 * (int64_t)Dn, 0, &g->wout, err))) goto fail;
	if ((s = mk(g, "halt", 1, D, 0, 0, &g->whalt, err))) goto fail;
	host->log(host, ARB_LOG_INFO,
		  "MoEGraph: %lld nodes x %d, %d hop(s), rank %d, <= %lld edges "
		  "(window %d), ACT <= %d iterations (halt %.3g), codes from %s%s%s",
		  (long long)g->nodes, Dn, g->hops, g->r, (long long)cap, g->window,
		  g->max_iters, g->thr, g->codes_name,
		  g->experts[0] ? ", experts " : "", g->experts);
	*self = g;
	return ARB_OK;
fail:
	graph_destroy(g);
	return s;
}

/* backend buffer of at least `bytes` for slot i (contents undefined) */
static void *ws(graph *g, int i, size_t bytes)
{
	if (bytes == 0) bytes = 16;
	if (g->wcap[i] < bytes) {
		if (g->w[i]) g->be->free(g->be, g->w[i]);
		size_t c = g->wcap[i] * 2 > bytes ? g->wcap[i] * 2 : bytes;
		g->w[i] = g->be->alloc(g->be, c);
		g->wcap[i] = g->w[i] ? c : 0;
	}
	return g->w[i];
}

/* the active subgraph in backend memory (host arrays on the CPU) */
typedef struct gview {
	int32_t *node, *pos, *pptr, *nptr, *npos, *eptr, *esrc, *edst, *tptr,
		*tdst;
	float *ones, *pinv, *ninv, *ew, *esc, *tw;
} gview;

static int up(graph *g, int slot, void **dst, const void *src, size_t bytes)
{
	if (!g->be->is_device) { *dst = (void *)src; return 0; }
	void *d = ws(g, slot, bytes);
	if (!d) return -1;
	if (bytes) g->be->upload(g->be, d, src, bytes);
	*dst = d;
	return 0;
}

static int view_of(graph *g, gview *v)
{
	gactive *a = &g->A;
	size_t M = (size_t)a->M, nA = (size_t)a->nA, nE = (size_t)a->nE;
	int bad = 0;
	bad |= up(g, W_NODE, (void **)&v->node, a->node, nA * 4);
	bad |= up(g, W_POS, (void **)&v->pos, a->pos_node, M * 4);
	bad |= up(g, W_PPTR, (void **)&v->pptr, a->pptr, (M + 1) * 4);
	bad |= up(g, W_ONES, (void **)&v->ones, a->ones, M * 4);
	bad |= up(g, W_PINV, (void **)&v->pinv, a->pinv, M * 4);
	bad |= up(g, W_NPTR, (void **)&v->nptr, a->nptr, (nA + 1) * 4);
	bad |= up(g, W_NPOS, (void **)&v->npos, a->npos, M * 4);
	bad |= up(g, W_NINV, (void **)&v->ninv, a->ninv, M * 4);
	bad |= up(g, W_EPTR, (void **)&v->eptr, a->eptr, (nA + 1) * 4);
	bad |= up(g, W_ESRC, (void **)&v->esrc, a->esrc, nE * 4);
	bad |= up(g, W_EDST, (void **)&v->edst, a->edst, nE * 4);
	bad |= up(g, W_EW, (void **)&v->ew, a->ew, nE * 4);
	bad |= up(g, W_ESC, (void **)&v->esc, a->escale, nE * 4);
	bad |= up(g, W_TPTR, (void **)&v->tptr, a->tptr, (nA + 1) * 4);
	bad |= up(g, W_TDST, (void **)&v->tdst, a->tdst, nE * 4);
	bad |= up(g, W_TW, (void **)&v->tw, a->tw, nE * 4);
	return bad;
}

static arb_status kcheck(graph *g, const graph_kernels *K, arb_error *err)
{
	char msg[256];
	if (K->check(msg, sizeof msg))
		return g->host->set_error(err, ARB_ERR_CUDA, "[%s] %s", g->instance, msg);
	return ARB_OK;
}

#define F(slot) ((float *)g->w[slot])

static arb_status graph_forward(void *self, arb_io *io, arb_error *err)
{
	graph *g = self;
	arb_backend *be = io->be;
	const graph_kernels *K = kern_of(be);
	g->fwd_ok = 0;
	if (!K)
		return g->host->set_error(err, ARB_ERR_UNSUPPORTED,
					  "[%s] backend %s: this graph.so was built "
					  "without CUDA kernels", g->instance, be->name);
	if (be != g->be)
		return g->host->set_error(err, ARB_ERR_INVALID,
					  "[%s] forward on another backend than the "
					  "one the instance was created on", g->instance);
	if (io->D != g->D)
		return g->host->set_error(err, ARB_ERR_INVALID,
					  "[%s] io->D %d, model D %d", g->instance,
					  io->D, g->D);
	int64_t M = (int64_t)io->B * io->T;
	const arb_named *cn = g->host->lookup(g->host, g->codes_name);
	if (!cn)
		return g->host->set_error(err, ARB_ERR_PLUGIN,
					  "[%s] nothing published as '%s': enable that "
					  "vq instance and place its section before the "
					  "graph (it must run earlier in the step)",
					  g->instance, g->codes_name);
	int64_t cnt = 1;
	for (int i = 0; i < cn->ndim; i++) cnt *= cn->shape[i];
	if (cn->dtype != ARB_I32 || cnt != M || !cn->data)
		return g->host->set_error(err, ARB_ERR_PLUGIN,
					  "[%s] '%s' is not int32 [%lld] (dtype %d, %lld "
					  "values)", g->instance, g->codes_name,
					  (long long)M, cn->dtype, (long long)cnt);
	if (M > g->codes_cap) {
		int32_t *c = realloc(g->codes_h, (size_t)M * 4);
		if (!c) return g->host->set_error(err, ARB_ERR_NOMEM, "[%s] out of memory", g->instance);
		g->codes_h = c;
		g->codes_cap = M;
	}
	if (be->is_device) be->download(be, g->codes_h, cn->data, (size_t)M * 4);
	else memcpy(g->codes_h, cn->data, (size_t)M * 4);
	for (int64_t m = 0; m < M; m++)
		if (g->codes_h[m] < 0 || g->codes_h[m] >= g->nodes)
			return g->host->set_error(err, ARB_ERR_INVALID,
						  "[%s] code %d at position %lld outside "
						  "[0, nodes=%lld)", g->instance,
						  g->codes_h[m], (long long)m,
						  (long long)g->nodes);
	g->have_codes = io->training;
	g->B = io->B;
	g->T = io->T;
	if (gactive_build(&g->A, g->codes_h, M, &g->E))
		return g->host->set_error(err, ARB_ERR_NOMEM, "[%s] out of memory", g->instance);
	gactive *a = &g->A;
	int64_t nA = a->nA, nE = a->nE;
	int Dn = g->Dn, D = g->D, r = g->r, I = g->max_iters, Hp = g->hops;
	g->M = M;
	g->nA = nA;
	g->nE = nE;
	gview v;
	size_t SN = (size_t)nA * Dn; /* floats of one node-state matrix */
	size_t nst = (size_t)I * Hp;
	int oom = view_of(g, &v);
	oom |= !ws(g, W_XI, (size_t)M * Dn * 4);
	oom |= !ws(g, W_S, (nst + 1) * SN * 4);
	oom |= !ws(g, W_MG, nst * SN * 4);
	oom |= !ws(g, W_AG, nst * SN * 4);
	oom |= !ws(g, W_Z, nst * (size_t)nA * r * 4);
	oom |= !ws(g, W_P, (size_t)I * M * Dn * 4);
	oom |= !ws(g, W_O, (size_t)I * M * D * 4);
	oom |= !ws(g, W_E, (g->experts_ok ? (size_t)I : 1) * M * D * 4);
	int xn = g->experts_ok && g->experts_norm;
	oom |= !ws(g, W_ON, (xn ? (size_t)I * M * D : 1) * 4);
	oom |= !ws(g, W_RS, (xn ? (size_t)I * M : 1) * 4);
	oom |= !ws(g, W_ZH, (size_t)M * 4);
	oom |= !ws(g, W_PH, (size_t)I * M * 4);
	oom |= !ws(g, W_W, (size_t)I * M * 4);
	oom |= !ws(g, W_CUM, (size_t)M * 4);
	oom |= !ws(g, W_RUN, (size_t)M * 4);
	oom |= !ws(g, W_NST, (size_t)M * 4);
	oom |= !ws(g, W_RHO, (size_t)M * 4);
	oom |= !ws(g, W_NRUN, 4);
	if (oom)
		return g->host->set_error(err, ARB_ERR_NOMEM,
					  "[%s] out of %s memory (%lld positions, %lld "
					  "active nodes, %lld active edges)", g->instance,
					  be->name, (long long)M, (long long)nA,
					  (long long)nE);
	/* S0 = nodes[A] + mean over positions of x Wi^T */
	float *xi = F(W_XI), *S = F(W_S);
	be->linear_forward(be, g->win, io->x, xi, M, 0);
	K->csr(nA, Dn, v.nptr, v.npos, v.ninv, xi, S, 0);
	be->embed_forward(be, g->emb, v.node, nA, S, 1);
	/* ACT state */
	be->zero(be, F(W_CUM), (size_t)M * 4);
	be->zero(be, F(W_RHO), (size_t)M * 4);
	be->zero(be, g->w[W_NST], (size_t)M * 4);
	{
		int32_t *run1 = malloc((size_t)(M ? M : 1) * 4);
		if (!run1) return g->host->set_error(err, ARB_ERR_NOMEM, "[%s] out of memory", g->instance);
		for (int64_t m = 0; m < M; m++) run1[m] = 1;
		if (be->is_device) be->upload(be, g->w[W_RUN], run1, (size_t)M * 4);
		else memcpy(g->w[W_RUN], run1, (size_t)M * 4);
		free(run1);
	}
	double aux_experts = 0.0;
	g->n_it = 0;
	for (int i = 0; i < I; i++) {
		for (int k = 0; k < Hp; k++) {
			size_t s = (size_t)i * Hp + k;
			float *Si = S + s * SN, *So = S + (s + 1) * SN;
			float *Mg = F(W_MG) + s * SN, *Ag = F(W_AG) + s * SN;
			float *Z = F(W_Z) + s * (size_t)nA * r;
			be->linear_forward(be, g->wm[k], Si, Mg, nA, 0);
			K->csr(nA, Dn, v.eptr, v.esrc, v.ew, Mg, Ag, 0);
			be->linear_forward(be, g->la[k], Ag, Z, nA, 0);
			be->copy(be, So, Si, SN * 4);
			be->linear_forward(be, g->wu[k], Ag, So, nA, 1);
			be->linear_forward(be, g->lb[k], Z, So, nA, 1);
		}
		float *Sf = S + (size_t)(i + 1) * Hp * SN;
		float *P = F(W_P) + (size_t)i * M * Dn, *O = F(W_O) + (size_t)i * M * D;
		float *E = O;
		K->csr(M, Dn, v.pptr, v.pos, v.ones, Sf, P, 0);
		be->linear_forward(be, g->wout, P, O, M, 0);
		if (g->experts_ok) {
			E = F(W_E) + (size_t)i * M * D;
			be->copy(be, E, O, (size_t)M * D * 4);
			arb_io sub = *io;
			sub.x = O;
			if (g->experts_norm) {
				float *On = F(W_ON) + (size_t)i * M * D;
				be->rmsnorm_forward(be, NULL, O, On, F(W_RS) + (size_t)i * M, M, D);
				sub.x = On;
			}
			sub.y = E;
			sub.dy = NULL;
			sub.dx = NULL;
			sub.aux_loss = 0;
			sub.layer = g->experts_layer >= 0 ? g->experts_layer : io->layer;
			arb_error e2;
			memset(&e2, 0, sizeof e2);
			arb_status st = g->host->call_forward(g->host, g->experts, &sub, &e2);
			if (st)
				return g->host->set_error(err, st, "[%s] experts = %s: %s",
							  g->instance, g->experts,
							  e2.msg[0] ? e2.msg
								    : "call_forward failed");
			aux_experts += sub.aux_loss;
		}
		float *ph = F(W_PH) + (size_t)i * M;
		be->linear_forward(be, g->whalt, E, F(W_ZH), M, 0);
		K->sigmoid(M, F(W_ZH), g->bias, ph);
		K->act_step(M, i, i == I - 1, g->thr, ph, F(W_CUM), g->w[W_RUN],
			    g->w[W_NST], F(W_W) + (size_t)i * M, F(W_RHO), g->w[W_NRUN]);
		K->row_axpy(M, D, F(W_W) + (size_t)i * M, E, io->y);
		g->n_it = i + 1;
		int32_t left;
		if (be->is_device) be->download(be, &left, g->w[W_NRUN], 4);
		else left = *(int32_t *)g->w[W_NRUN];
		if (left == 0) break;
	}
	arb_status st = kcheck(g, K, err);
	if (st) return st;
	double rho = M ? be->sum(be, F(W_RHO), M) / (double)M : 0.0;
	g->ponder_mean = rho;
	g->mean_iters = g->n_it;
	io->aux_loss = g->tau * rho + aux_experts;
	char pn[160];
	snprintf(pn, sizeof pn, "graph.%s.ponder", g->instance);
	arb_named t;
	memset(&t, 0, sizeof t);
	t.struct_size = sizeof t;
	t.dtype = ARB_F32;
	t.ndim = 1;
	t.shape[0] = M;
	t.data = g->w[W_RHO];
	st = g->host->publish(g->host, pn, &t, err);
	if (st) return st;
	g->fwd_ok = io->training;
	return ARB_OK;
}

static arb_status graph_backward(void *self, arb_io *io, arb_error *err)
{
	graph *g = self;
	arb_backend *be = io->be;
	const graph_kernels *K = kern_of(be);
	int64_t M = (int64_t)io->B * io->T;
	if (!K || !g->fwd_ok || M != g->M)
		return g->host->set_error(err, ARB_ERR_INVALID,
					  "[%s] backward without a matching training "
					  "forward", g->instance);
	int64_t nA = g->nA, nE = g->nE;
	int Dn = g->Dn, D = g->D, r = g->r, Hp = g->hops, N = g->n_it;
	size_t SN = (size_t)nA * Dn;
	gview v;
	int oom = view_of(g, &v); /* unchanged since forward: re-points only */
	oom |= !ws(g, W_DW, (size_t)N * M * 4);
	oom |= !ws(g, W_DE, (size_t)M * D * 4);
	oom |= !ws(g, W_DO, (size_t)M * D * 4);
	oom |= !ws(g, W_DON, (g->experts_ok && g->experts_norm ? (size_t)M * D : 1) * 4);
	oom |= !ws(g, W_DP, (size_t)M * Dn * 4);
	oom |= !ws(g, W_DH, SN * 4);
	oom |= !ws(g, W_DA, SN * 4);
	oom |= !ws(g, W_DM, SN * 4);
	oom |= !ws(g, W_DZ, (size_t)nA * r * 4);
	oom |= !ws(g, W_DZH, (size_t)M * 4);
	oom |= !ws(g, W_DXI, (size_t)M * Dn * 4);
	oom |= !ws(g, W_EG, (size_t)nE * 4);
	float *eg_h = realloc(g->eg_h, (size_t)(nE ? nE : 1) * 4);
	if (oom || !eg_h)
		return g->host->set_error(err, ARB_ERR_NOMEM, "[%s] out of %s memory",
					  g->instance, be->name);
	g->eg_h = eg_h;
	const float *G = io->dy;
	int ex = g->experts_ok;
	float *S = F(W_S), *dH = F(W_DH), *dE = F(W_DE), *dA = F(W_DA),
	      *dM = F(W_DM), *dZ = F(W_DZ), *dz = F(W_DZH), *eg = F(W_EG);
	for (int i = 0; i < N; i++) {
		float *E = ex ? F(W_E) + (size_t)i * M * D : F(W_O) + (size_t)i * M * D;
		K->row_dot(M, D, G, E, F(W_DW) + (size_t)i * M);
	}
	be->zero(be, dH, SN * 4);
	be->zero(be, eg, (size_t)(nE ? nE : 1) * 4);
	double aux_experts = 0.0;
	for (int i = N - 1; i >= 0; i--) {
		float *P = F(W_P) + (size_t)i * M * Dn, *O = F(W_O) + (size_t)i * M * D;
		float *E = ex ? F(W_E) + (size_t)i * M * D : O;
		be->zero(be, dE, (size_t)M * D * 4);
		K->row_axpy(M, D, F(W_W) + (size_t)i * M, G, dE);
		K->act_grad(M, i, F(W_PH) + (size_t)i * M, g->w[W_NST], F(W_DW),
			    M ? g->tau / (float)M : 0.0f, dz);
		be->linear_vote(be, g->whalt, E, dz, M, io->vote);
		be->linear_backward_x(be, g->whalt, dz, dE, M, 1);
		float *dO = dE;
		if (ex) {
			dO = F(W_DO);
			arb_io sub = *io;
			sub.layer = g->experts_layer >= 0 ? g->experts_layer : io->layer;
			float *On = g->experts_norm ? F(W_ON) + (size_t)i * M * D : O;
			sub.x = On;
			sub.y = dO; /* recompute: scratch output */
			sub.dy = NULL;
			sub.dx = NULL;
			be->copy(be, dO, O, (size_t)M * D * 4);
			arb_status st = g->host->call_forward(g->host, g->experts, &sub, err);
			if (st) return st;
			/* dO = dE (the residual path) + the experts' input gradient,
			 * through rmsnorm when they got rmsnorm(O) */
			be->copy(be, dO, dE, (size_t)M * D * 4);
			float *dX = dO;
			if (g->experts_norm) {
				dX = F(W_DON);
				be->zero(be, dX, (size_t)M * D * 4);
			}
			sub.y = NULL;
			sub.dy = dE;
			sub.dx = dX;
			sub.aux_loss = 0;
			st = g->host->call_backward(g->host, g->experts, &sub, err);
			if (st) return st;
			if (g->experts_norm)
				be->rmsnorm_backward(be, NULL, O, F(W_RS) + (size_t)i * M, dX, dO,
						     M, D, 1);
			aux_experts += sub.aux_loss;
		}
		be->linear_vote(be, g->wout, P, dO, M, io->vote);
		be->linear_backward_x(be, g->wout, dO, F(W_DP), M, 0);
		K->csr(nA, Dn, v.nptr, v.npos, v.ones, F(W_DP), dH, 1);
		for (int k = Hp - 1; k >= 0; k--) {
			size_t s = (size_t)i * Hp + k;
			float *Si = S + s * SN;
			float *Mg = F(W_MG) + s * SN, *Ag = F(W_AG) + s * SN;
			float *Z = F(W_Z) + s * (size_t)nA * r;
			be->linear_vote(be, g->wu[k], Ag, dH, nA, io->vote);
			be->linear_vote(be, g->lb[k], Z, dH, nA, io->vote);
			be->linear_backward_x(be, g->lb[k], dH, dZ, nA, 0);
			be->linear_vote(be, g->la[k], Ag, dZ, nA, io->vote);
			be->linear_backward_x(be, g->wu[k], dH, dA, nA, 0);
			be->linear_backward_x(be, g->la[k], dZ, dA, nA, 1);
			K->edge_dot(nE, Dn, v.esrc, v.edst, v.esc, Mg, dA, eg);
			K->csr(nA, Dn, v.tptr, v.tdst, v.tw, dA, dM, 0);
			be->linear_vote(be, g->wm[k], Si, dM, nA, io->vote);
			be->linear_backward_x(be, g->wm[k], dM, dH, nA, 1);
		}
	}
	/* S0 = nodes[A] + mean(x Wi^T): table votes and the input path */
	be->embed_vote(be, g->emb, v.node, nA, dH, io->vote);
	float *dxi = F(W_DXI);
	K->csr(M, Dn, v.pptr, v.pos, v.pinv, dH, dxi, 0);
	be->linear_vote(be, g->win, io->x, dxi, M, io->vote);
	be->linear_backward_x(be, g->win, dxi, io->dx, M, 1);
	arb_status st = kcheck(g, K, err);
	if (st) return st;
	/* edge sign votes */
	if (nE) {
		if (be->is_device) be->download(be, eg_h, eg, (size_t)nE * 4);
		else memcpy(eg_h, eg, (size_t)nE * 4);
		for (int64_t k = 0; k < nE; k++) gedge_vote(&g->E, g->A.eid[k], eg_h[k]);
	}
	io->aux_loss = aux_experts;
	g->fwd_ok = 0;
	return ARB_OK;
}

static arb_status graph_after_step(void *self, uint64_t step, arb_error *err)
{
	graph *g = self;
	g->moved += gedge_settle(&g->E, g->edge_thr);
	if (g->have_codes) {
		gedge_observe(&g->E, g->codes_h, g->B, g->T, g->window);
		g->have_codes = 0;
	}
	int bad = gedge_commit(&g->E);
	if (!bad && g->decay_every > 0 && step > 0 &&
	    step % (uint64_t)g->decay_every == 0)
		bad = gedge_decay(&g->E);
	if (bad)
		return g->host->set_error(err, ARB_ERR_NOMEM, "[%s] out of memory",
					  g->instance);
	return ARB_OK;
}

static arb_status graph_save(void *self, const arb_state_io *io, arb_error *err)
{
	graph *g = self;
	gedges *e = &g->E;
	size_t c = (size_t)e->cap;
	int64_t n = e->n;
	arb_status s;
	/* fixed-size records: unused slots are written as they are */
	if ((s = io->write(io->ctx, "edges.n", &n, sizeof n)) ||
	    (s = io->write(io->ctx, "edges.src", e->src, c * 4)) ||
	    (s = io->write(io->ctx, "edges.dst", e->dst, c * 4)) ||
	    (s = io->write(io->ctx, "edges.sign", e->sign, c)) ||
	    (s = io->write(io->ctx, "edges.score", e->score, c)) ||
	    (s = io->write(io->ctx, "edges.vote", e->vote, c)))
		return g->host->set_error(err, s, "[%s] cannot write the edge list",
					  g->instance);
	return ARB_OK;
}

static arb_status graph_load(void *self, const arb_state_io *io, arb_error *err)
{
	graph *g = self;
	gedges *e = &g->E;
	size_t c = (size_t)e->cap;
	int64_t n = 0;
	arb_status s;
	if ((s = io->read(io->ctx, "edges.n", &n, sizeof n)) ||
	    (s = io->read(io->ctx, "edges.src", e->src, c * 4)) ||
	    (s = io->read(io->ctx, "edges.dst", e->dst, c * 4)) ||
	    (s = io->read(io->ctx, "edges.sign", e->sign, c)) ||
	    (s = io->read(io->ctx, "edges.score", e->score, c)) ||
	    (s = io->read(io->ctx, "edges.vote", e->vote, c))) {
		e->n = 0;
		gedge_rehash(e);
		return g->host->set_error(err, s ? s : ARB_ERR_FORMAT,
					  "[%s] edge list missing or of another "
					  "capacity (max_edges %lld)", g->instance,
					  (long long)e->cap);
	}
	const char *why = NULL;
	if (n < 0 || n > e->cap) why = "edge count out of range";
	for (int64_t i = 0; !why && i < n; i++) {
		if (e->src[i] < 0 || e->src[i] >= g->nodes || e->dst[i] < 0 ||
		    e->dst[i] >= g->nodes || e->src[i] == e->dst[i])
			why = "node id out of range";
		else if (e->sign[i] < -1 || e->sign[i] > 1 || e->score[i] < 0 ||
			 e->vote[i] == -128)
			why = "sign, score or vote out of range";
	}
	e->n = why ? 0 : n;
	gedge_rehash(e);
	for (int64_t i = 0; !why && i < n; i++)
		if (ghash_get(&e->h, gedge_key(e->src[i], e->dst[i])) != (int32_t)i)
			why = "duplicate edge";
	if (why) {
		e->n = 0;
		gedge_rehash(e);
		return g->host->set_error(err, ARB_ERR_FORMAT,
					  "[%s] corrupt edge list: %s", g->instance, why);
	}
	g->have_codes = 0;
	return ARB_OK;
}

static int graph_metrics(void *self, char *buf, size_t cap)
{
	graph *g = self;
	int n = snprintf(buf, cap,
			 "graph_ponder=%.4f graph_iters=%d graph_active_nodes=%lld "
			 "graph_active_edges=%lld graph_edges=%lld graph_evicted=%lld "
			 "graph_sign_moves=%lld",
			 g->ponder_mean, g->n_it, (long long)g->nA, (long long)g->nE,
			 (long long)g->E.n, (long long)g->E.evicted, (long long)g->moved);
	return n < 0 ? 0 : (size_t)n >= cap ? (int)(cap ? cap - 1 : 0) : n;
}

static const arb_plugin graph_desc = {
	.abi_version = ARB_ABI_VERSION,
	.struct_size = sizeof(arb_plugin),
	.build_sig = ARB_BUILD_SIGNATURE,
	.name = "graph",
	.version = "0.1.0",
	.description = "MoEGraph: message passing over VQ codes with a bounded "
		       "data-built edge list and an ACT loop",
	.license = "MIT",
	.slot = ARB_SLOT_RESIDUAL,
	.schema = graph_schema,
	.create = graph_create,
	.destroy = graph_destroy,
	.forward = graph_forward,
	.backward = graph_backward,
	.save = graph_save,
	.load = graph_load,
	.after_step = graph_after_step,
	.metrics = graph_metrics,
};
ARB_PLUGIN_DEFINE(graph_desc)
