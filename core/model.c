/*
 * core/model.c -- the ARB text trunk (core/model.h): ByteEmbedding over
 * trigram positions, L pre-RMSNorm blocks of causal attention (ternary Q/K/V/O
 * or MLA-style latent K/V) and a ternary SwiGLU FFN, a final RMSNorm and the
 * ByteHead that predicts the 3 bytes of the next trigram, each later byte
 * conditioned on the earlier ones. Plugins (FFN / RESIDUAL / INPUT / SERVICE
 * slots) are loaded from the config's plugin sections.
 *
 * Legend: B batch, T positions (trigrams), M = B*T rows, D model width,
 * H heads, hd = D/H, F FFN hidden width, r latent KV rank, L layers.
 *
 * Every compute step goes through the backend op table (arb/ops.h), so the
 * same code runs on "cpu" and "cuda". Activations that backward needs live
 * in backend buffers allocated once at create for the largest batch and ctx.
 *
 * Tensors (all through arb_registry_create; names as in checkpoints):
 *   emb              768 x D table, row 256*j + byte (j = byte slot 0..2).
 *                    fan_in 3: a position sums three rows, so E0 is chosen
 *                    as for a 3-input sum (x0 has variance ~0.5).
 *   blk<l>.norm1/2   1 x D frozen gain (const_trit +1, E = 0)
 *   blk<l>.attn.q/k/v/o   D x D          (latent_kv = 0)
 *   blk<l>.attn.dkv  r x D, .uk/.uv  D x r   (latent_kv = r > 0; no k/v)
 *   blk<l>.ffn.w1/w3 F x D, .w2 D x F   (absent where an FFN plugin runs)
 *   norm_f, head.norm, head.norm2   1 x D frozen gains
 *   head.cond        515 x D table: row 256*i + c_i conditions later bytes
 *                    on byte i of the target trigram; row 512 + j is slot
 *                    j's own row (fan_in 2: E0 = 0)
 *   head.ffn.w1/w3   Hh x D, head.ffn.w2 D x Hh: the ByteHead SwiGLU shared
 *                    by the three slots (Hh = [model] head_hidden; -1 means
 *                    2*D, 0 means none and no such tensors)
 *   head.out0..2     256 x D; fan_in 4*D so that initial logits are quiet
 *                    (std ~0.6) and the initial loss sits near ln 256.
 * Positions: a constant sinusoid table [ctx, D] (not trainable, not state)
 * added with add_rows(alpha = pos_scale):
 *   pos[p][2i] = sin(p / 10000^(2i/D)), pos[p][2i+1] = cos(same).
 *
 * ByteHead (bench/float_ref.py mirrors it):
 *   u_0 = z + Cond[512]
 *   u_1 = z + Cond[c_0] + Cond[513]
 *   u_2 = z + Cond[c_0] + Cond[256 + c_1] + Cond[514]
 *   a_j = nh(u_j); h_j = nh2(u_j + W2 (silu(W1 a_j) * W3 a_j)) (h_j = a_j
 *   when Hh = 0); logits_j = Head_j h_j. The three slots are stacked as
 *   3M rows (slot-major) so the shared norm and SwiGLU run (and vote) once.
 * Loss: mean cross-entropy (nats) over B*T*3 bytes; cross_entropy's
 * gradient (grad_scale 1/(3M)) is computed during a training forward and
 * kept for backward.
 *
 * Plugins: every non-core section "name" or "name:instance" is opened with
 * arb_plugin_open(name, [run] plugin_path), validated with
 * arb_cfg_validate_section against the plugin's schema (the cfg is const in
 * this API; validation only fills the plugin section's defaults, so the
 * model casts the const away for that one call) and created with its own
 * host table (host.c).
 *   FFN slot       replaces the SwiGLU in the layers of its `layers` key
 *                  (INT_LIST in its schema; empty/absent = all layers).
 *   RESIDUAL slot  adds to the stream after the blocks of `layers`
 *                  (default: after the last block; with 0 layers, after the
 *                  embedding).
 *   INPUT slot     adds to the input embeddings (layer -1).
 *   SERVICE slot   only runs through host->call_forward.
 *   trunk = false  (a BOOL `trunk` key in the plugin's schema, set false):
 *                  placed in no block whatever the slot, runs only through
 *                  host->call_forward; its `layers` must be empty (config
 *                  error at the line of `layers` otherwise).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"
#include "model_internal.h"

#define VOCAB 256
#define MAX_COMPONENTS 64

const arb_plugin *(*arb_model_plugin_resolver)(const char *name);

typedef struct block {
	arb_tern *n1, *q, *k, *v, *o, *dkv, *uk, *uv, *n2, *w1, *w2, *w3;
	int ffn_plugin;       /* 1: an FFN-slot component replaces the SwiGLU */
	/* saved activations (backend memory) */
	float *h1;            /* n1(x)              [M, D] */
	float *rstd1;         /* [M] */
	float *q_a, *k_a, *v_a; /* [M, D] == [B, T, H, hd] */
	float *c_a;           /* latent Wdkv h1      [M, r] */
	float *att;           /* attention output    [M, D] */
	float *lse;           /* [B, H, T] */
	float *xmid;          /* x + O(att)          [M, D] */
	float *h2;            /* n2(xmid)            [M, D] */
	float *rstd2;         /* [M] */
	float *a1, *a3, *g;   /* W1 h2, W3 h2, silu(a1)*a3   [M, F] */
} block;

struct arb_model {
	arb_backend *be;
	int profile;           /* [run] profile */
	double prof[3];       /* seconds in forward, backward, step (whole) */
	int64_t prof_n[3];    /* calls of each since the last report */
	int prof_live;        /* inside a training forward, backward or step */
	arb_registry reg;
	arb_sched_cfg sched;
	arb_model_info info;
	int D, L, H, hd, T, F, r, Hh, Bmax;
	double pos_scale;

	arb_tern *emb, *norm_f, *hnorm, *hnorm2, *cond, *out[3];
	arb_tern *hw1, *hw2, *hw3;   /* head SwiGLU (NULL when Hh = 0) */
	block *blk;

	/* activations */
	float *pos;           /* sinusoid [T, D] */
	float **xs;           /* residual stream before block l: L+1 x [M, D] */
	float *z;             /* nf(x_L)  [M, D] */
	float *rstdf;         /* [M] */
	/* head, slot-major 3M rows: rows j*M .. j*M+M-1 are slot j */
	float *hu;            /* u            [3M, D] */
	float *ha;            /* nh(u)        [3M, D] */
	float *hrstd1;        /* [3M] */
	float *hf1, *hf3, *hg;/* W1 a, W3 a, silu(.)*(.)   [3M, Hh] */
	float *hv;            /* u + W2 g     [3M, D] */
	float *hb;            /* nh2(v)       [3M, D] */
	float *hrstd2;        /* [3M] */
	float *hin;           /* head input: hb, or ha when Hh = 0 */
	float *logits[3];     /* [M, 256] */
	float *dlogits[3];    /* [M, 256] kept from a training forward */
	float *lossrow;       /* [M] */
	int32_t *eidx;        /* [3M] embedding rows  (slot-major) */
	int32_t *tidx;        /* [3M] targets          (slot-major) */
	int32_t *cidx;        /* [6M] cond rows, 6 segments of M:
				 512 | c0, 513 | c0, 256 + c1, 514 */
	int32_t *bytes32;     /* [B, 3T] input bytes for components */
	/* gradient scratch */
	float *dres, *dn, *datt, *dq, *dk, *dv, *dc, *dg, *dh1, *dh3;
	float *du;            /* [3M, D] gradient of u */
	float *dcond;         /* [6M, D]: du0 | du1 | du1 | du2 | du2 | du2 */
	float *dhb, *dhv, *dha;          /* [3M, D] */
	float *dhf1, *dhf3, *dhg;        /* [3M, Hh] */
	float *demb;          /* [3M, D] */
	/* host scratch */
	int32_t *h_idx;       /* 3M */
	int32_t *h_bytes;     /* B*3T */
	float *h_logits;      /* 256 */

	/* last training forward */
	int fwd_B, fwd_T, fwd_training;

	/* components */
	arb_hostctx hctx;
	arb_component *comps[MAX_COMPONENTS];
	int n_comps;
};

/* ------------------------------------------------------------------------
 * small helpers */

static void *balloc(arb_model *m, size_t n, int *fail)
{
	if (n == 0) n = 4;
	void *p = m->be->alloc(m->be, n);
	if (!p) *fail = 1;
	return p;
}

static void bfree(arb_model *m, void *p)
{
	if (p) m->be->free(m->be, p);
}

static arb_status mk(arb_model *m, const char *name, int64_t rows,
		     int64_t cols, int64_t fan_in, arb_tern **out, arb_error *err)
{
	arb_tern_param p;
	memset(&p, 0, sizeof p);
	p.struct_size = sizeof p;
	p.group_size = 0;
	p.zero_frac = -1.0;
	p.fan_in = fan_in;
	return arb_registry_create(&m->reg, name, rows, cols, &p, out, err);
}

static arb_status mk_gain(arb_model *m, const char *name, arb_tern **out,
			  arb_error *err)
{
	arb_tern_param p;
	memset(&p, 0, sizeof p);
	p.struct_size = sizeof p;
	p.frozen = 1;
	p.zero_frac = 0.0;
	p.const_trit = 1;
	p.fan_in = 1;          /* E0 = round(log2(1)) = 0: gain exactly 1 */
	return arb_registry_create(&m->reg, name, 1, m->D, &p, out, err);
}

static int schema_has(const arb_conf_key *s, const char *key, int type)
{
	for (; s && s->key; s++)
		if (strcmp(s->key, key) == 0 && s->type == type) return 1;
	return 0;
}

static void io_init(arb_model *m, arb_io *io, int B, int T, int layer,
		    int training)
{
	memset(io, 0, sizeof *io);
	io->struct_size = sizeof *io;
	io->be = m->be;
	io->B = B;
	io->T = T;
	io->D = m->D;
	io->layer = layer;
	io->training = training;
	io->bytes = m->bytes32;
}

static int comp_in_layer(const arb_component *c, int l)
{
	for (int i = 0; i < c->n_layers; i++)
		if (c->layers[i] == l) return 1;
	return 0;
}

static arb_status comp_fail(const arb_component *c, const char *what,
			    arb_status s, arb_error *err)
{
	if (err && err->msg[0] == 0)
		ARB_FAIL(err, s ? (int)s : ARB_ERR_PLUGIN,
			 "[%s] %s failed (status %d) without a message",
			 c->instance, what, (int)s);
	return s ? s : ARB_ERR_PLUGIN;
}

/* ------------------------------------------------------------------------
 * plugins */

static arb_status load_components(arb_model *m, const arb_cfg *cfg,
				  const char *plugin_path, arb_error *err)
{
	int n = arb_cfg_plugin_count(cfg);
	for (int i = 0; i < n; i++) {
		const char *section = arb_cfg_plugin_section(cfg, i);
		if (m->n_comps == MAX_COMPONENTS)
			return ARB_FAIL(err, ARB_ERR_CONFIG,
					"too many plugin sections (max %d)",
					MAX_COMPONENTS);
		arb_component *c = calloc(1, sizeof *c);
		if (!c) return ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
		m->comps[m->n_comps++] = c;
		m->hctx.comps = m->comps;
		m->hctx.n_comps = m->n_comps;
		snprintf(c->section, sizeof c->section, "%s", section);
		char name[128];
		snprintf(name, sizeof name, "%s", section);
		char *colon = strchr(name, ':');
		const char *inst = name;
		if (colon) {
			*colon = 0;
			inst = colon + 1;
		}
		if (!*name || !*inst || strlen(inst) >= sizeof c->instance)
			return ARB_FAIL(err, ARB_ERR_CONFIG,
					"[%s]: bad plugin section name (want "
					"'name' or 'name:instance')", section);
		snprintf(c->instance, sizeof c->instance, "%s", inst);
		for (int k = 0; k < m->n_comps - 1; k++)
			if (strcmp(m->comps[k]->instance, c->instance) == 0)
				return ARB_FAIL(err, ARB_ERR_CONFIG,
						"[%s]: instance name '%s' is already "
						"used by [%s]", section, c->instance,
						m->comps[k]->section);

		arb_status s = ARB_OK;
		if (arb_model_plugin_resolver) {
			c->lp.desc = arb_model_plugin_resolver(name);
			snprintf(c->lp.path, sizeof c->lp.path, "(in-process %s)", name);
			if (!c->lp.desc)
				return ARB_FAIL(err, ARB_ERR_PLUGIN,
						"plugin '%s' not found (in-process resolver)",
						name);
		} else if ((s = arb_plugin_open(name, plugin_path, &c->lp, err))) {
			return s;
		}
		const arb_plugin *d = c->lp.desc;
		c->slot = d->slot;
		if (c->slot < ARB_SLOT_FFN || c->slot > ARB_SLOT_SERVICE)
			return ARB_FAIL(err, ARB_ERR_PLUGIN,
					"plugin '%s' (%s): unknown slot %d", name,
					c->lp.path, c->slot);
		/* validation only fills this plugin section's defaults */
		s = arb_cfg_validate_section((arb_cfg *)cfg, section, d->schema, err);
		if (s) return s;
		const arb_conf *conf = arb_cfg_section(cfg, section);
		if (!conf)
			return ARB_FAIL(err, ARB_ERR_CONFIG,
					"[%s]: section vanished after validation",
					section);

		/* placement (phase 1: no instance is created yet). A schema
		 * with a bool `trunk` key lets a section declare an instance
		 * the core runs in no block (trunk = false): it only runs when
		 * another component calls it through the host. */
		int64_t lst[256];
		int nl = 0;
		if (schema_has(d->schema, "layers", ARB_CONF_INT_LIST))
			nl = arb_conf_int_list(conf, "layers", lst, 256);
		c->placed = c->slot != ARB_SLOT_SERVICE;
		if (schema_has(d->schema, "trunk", ARB_CONF_BOOL) &&
		    !arb_conf_bool(conf, "trunk")) {
			c->placed = 0;
			if (nl)
				return arb_cfg_key_error(cfg, section, "layers", err,
							 "must be empty with trunk = "
							 "false (the instance serves no "
							 "block; it runs only when another "
							 "component calls it)");
		}
		for (int k = 0; k < nl; k++)
			if (lst[k] < 0 || lst[k] >= m->L)
				return arb_cfg_key_error(cfg, section, "layers", err,
							 "%lld is not a block index "
							 "(model has %d layers)",
							 (long long)lst[k], m->L);
		if (!c->placed) {
			/* in no block: n_layers stays 0 */
		} else if (c->slot == ARB_SLOT_FFN) {
			if (m->L == 0)
				return ARB_FAIL(err, ARB_ERR_CONFIG,
						"[%s]: an FFN component needs at least "
						"one layer", section);
			int cnt = nl ? nl : m->L;
			c->layers = calloc(cnt, sizeof *c->layers);
			if (!c->layers) return ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
			for (int k = 0; k < cnt; k++)
				c->layers[k] = nl ? (int)lst[k] : k;
			c->n_layers = cnt;
		} else if (c->slot == ARB_SLOT_RESIDUAL) {
			int cnt = nl ? nl : 1;
			c->layers = calloc(cnt, sizeof *c->layers);
			if (!c->layers) return ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
			for (int k = 0; k < cnt; k++)
				c->layers[k] = nl ? (int)lst[k] : m->L - 1;
			c->n_layers = cnt;
		}

		if (c->slot == ARB_SLOT_FFN)
			for (int k = 0; k < c->n_layers; k++)
				m->blk[c->layers[k]].ffn_plugin = 1;
		c->conf = conf;
	}
	return ARB_OK;
}

/* phase 2, after the trunk's tensors exist: create every instance */
static arb_status create_components(arb_model *m, arb_error *err)
{
	for (int i = 0; i < m->n_comps; i++) {
		arb_component *c = m->comps[i];
		const arb_plugin *d = c->lp.desc;
		arb_host_setup(&m->hctx, c);
		if (err) err->msg[0] = 0;
		void *self = NULL;
		arb_status s = d->create(&c->host, c->conf, c->instance, &self, err);
		if (s) {
			if (self) d->destroy(self);
			return comp_fail(c, "create", s, err);
		}
		c->self = self;
	}
	return ARB_OK;
}

static void free_components(arb_model *m)
{
	for (int i = m->n_comps - 1; i >= 0; i--) {
		arb_component *c = m->comps[i];
		if (c->self && c->lp.desc) c->lp.desc->destroy(c->self);
		c->self = NULL;
	}
}

static void close_components(arb_model *m)
{
	for (int i = m->n_comps - 1; i >= 0; i--) {
		arb_component *c = m->comps[i];
		if (c->lp.dl) arb_plugin_close(&c->lp);
		free(c->layers);
		free(c);
	}
	m->n_comps = 0;
	arb_hostctx_free(&m->hctx);
}

/* [run] profile: wall time of a call with the device idle before and after
 * it (0 when profiling is off) */
static double prof_begin(arb_model *m)
{
	if (!m->profile || !m->prof_live) return 0.0;
	m->be->sync(m->be);
	return arb_now();
}
static double prof_end(arb_model *m, double t0)
{
	if (!m->profile || !m->prof_live) return 0.0;
	m->be->sync(m->be);
	return arb_now() - t0;
}

/* run every component of `slot` placed at layer l (forward or backward) */
static arb_status run_slot(arb_model *m, int slot, int l, int backward,
			   arb_io *io, arb_error *err)
{
	for (int k = 0; k < m->n_comps; k++) {
		int i = backward ? m->n_comps - 1 - k : k;
		arb_component *c = m->comps[i];
		if (c->slot != slot || !c->placed) continue;
		if (slot != ARB_SLOT_INPUT && !comp_in_layer(c, l)) continue;
		if (err) err->msg[0] = 0;
		io->aux_loss = 0;
		double t0 = prof_begin(m);
		arb_status s = backward ? c->lp.desc->backward(c->self, io, err)
					: c->lp.desc->forward(c->self, io, err);
		c->prof[backward ? 1 : 0] += prof_end(m, t0);
		if (s) return comp_fail(c, backward ? "backward" : "forward", s, err);
		if (!backward) c->aux_loss = io->aux_loss;
	}
	return ARB_OK;
}

/* ------------------------------------------------------------------------
 * create / free */

static arb_status alloc_acts(arb_model *m, arb_error *err)
{
	arb_backend *be = m->be;
	int fail = 0;
	size_t M = (size_t)m->Bmax * m->T, D = m->D, F = m->F, r = m->r;
	size_t f = sizeof(float);
	m->pos = balloc(m, (size_t)m->T * D * f, &fail);
	m->xs = calloc(m->L + 1, sizeof *m->xs);
	if (!m->xs) return ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
	for (int l = 0; l <= m->L; l++) m->xs[l] = balloc(m, M * D * f, &fail);
	for (int l = 0; l < m->L; l++) {
		block *b = &m->blk[l];
		b->h1 = balloc(m, M * D * f, &fail);
		b->rstd1 = balloc(m, M * f, &fail);
		b->q_a = balloc(m, M * D * f, &fail);
		b->k_a = balloc(m, M * D * f, &fail);
		b->v_a = balloc(m, M * D * f, &fail);
		if (r) b->c_a = balloc(m, M * r * f, &fail);
		b->att = balloc(m, M * D * f, &fail);
		b->lse = balloc(m, M * m->H * f, &fail);
		b->xmid = balloc(m, M * D * f, &fail);
		b->h2 = balloc(m, M * D * f, &fail);
		b->rstd2 = balloc(m, M * f, &fail);
		if (!b->ffn_plugin) {
			b->a1 = balloc(m, M * F * f, &fail);
			b->a3 = balloc(m, M * F * f, &fail);
			b->g = balloc(m, M * F * f, &fail);
		}
	}
	m->z = balloc(m, M * D * f, &fail);
	m->rstdf = balloc(m, M * f, &fail);
	size_t Hh = (size_t)m->Hh;
	m->hu = balloc(m, 3 * M * D * f, &fail);
	m->ha = balloc(m, 3 * M * D * f, &fail);
	m->hrstd1 = balloc(m, 3 * M * f, &fail);
	if (Hh) {
		m->hf1 = balloc(m, 3 * M * Hh * f, &fail);
		m->hf3 = balloc(m, 3 * M * Hh * f, &fail);
		m->hg = balloc(m, 3 * M * Hh * f, &fail);
		m->hv = balloc(m, 3 * M * D * f, &fail);
		m->hb = balloc(m, 3 * M * D * f, &fail);
		m->hrstd2 = balloc(m, 3 * M * f, &fail);
		m->dhv = balloc(m, 3 * M * D * f, &fail);
		m->dha = balloc(m, 3 * M * D * f, &fail);
		m->dhf1 = balloc(m, 3 * M * Hh * f, &fail);
		m->dhf3 = balloc(m, 3 * M * Hh * f, &fail);
		m->dhg = balloc(m, 3 * M * Hh * f, &fail);
	}
	m->hin = Hh ? m->hb : m->ha;
	m->dhb = balloc(m, 3 * M * D * f, &fail);
	m->dcond = balloc(m, 6 * M * D * f, &fail);
	for (int j = 0; j < 3; j++) {
		m->logits[j] = balloc(m, M * VOCAB * f, &fail);
		m->dlogits[j] = balloc(m, M * VOCAB * f, &fail);
	}
	m->lossrow = balloc(m, M * f, &fail);
	m->eidx = balloc(m, 3 * M * sizeof(int32_t), &fail);
	m->tidx = balloc(m, 3 * M * sizeof(int32_t), &fail);
	m->cidx = balloc(m, 6 * M * sizeof(int32_t), &fail);
	m->bytes32 = balloc(m, 3 * M * sizeof(int32_t), &fail);
	m->dres = balloc(m, M * D * f, &fail);
	m->dn = balloc(m, M * D * f, &fail);
	m->datt = balloc(m, M * D * f, &fail);
	m->dq = balloc(m, M * D * f, &fail);
	m->dk = balloc(m, M * D * f, &fail);
	m->dv = balloc(m, M * D * f, &fail);
	if (r) m->dc = balloc(m, M * r * f, &fail);
	m->dg = balloc(m, M * F * f, &fail);
	m->dh1 = balloc(m, M * F * f, &fail);
	m->dh3 = balloc(m, M * F * f, &fail);
	m->du = balloc(m, 3 * M * D * f, &fail);
	m->demb = balloc(m, 3 * M * D * f, &fail);
	m->h_idx = calloc(6 * M, sizeof(int32_t));
	m->h_bytes = calloc(3 * M, sizeof(int32_t));
	m->h_logits = calloc(VOCAB, sizeof(float));
	if (fail || !m->h_idx || !m->h_bytes || !m->h_logits)
		return ARB_FAIL(err, ARB_ERR_NOMEM,
				"out of %s memory for activations (batch %d, ctx %d, "
				"d_model %d)", be->name, m->Bmax, m->T, m->D);
	/* the sinusoid table: a constant of the architecture */
	float *pos = malloc((size_t)m->T * D * f);
	if (!pos) return ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
	for (int p = 0; p < m->T; p++)
		for (size_t i = 0; i < D; i += 2) {
			double ang = p / pow(10000.0, (double)i / (double)D);
			pos[p * D + i] = (float)sin(ang);
			if (i + 1 < D) pos[p * D + i + 1] = (float)cos(ang);
		}
	be->upload(be, m->pos, pos, (size_t)m->T * D * f);
	free(pos);
	return ARB_OK;
}

static void free_acts(arb_model *m)
{
	bfree(m, m->pos);
	if (m->xs)
		for (int l = 0; l <= m->L; l++) bfree(m, m->xs[l]);
	free(m->xs);
	for (int l = 0; m->blk && l < m->L; l++) {
		block *b = &m->blk[l];
		float *bufs[] = { b->h1, b->rstd1, b->q_a, b->k_a, b->v_a, b->c_a,
				  b->att, b->lse, b->xmid, b->h2, b->rstd2, b->a1,
				  b->a3, b->g };
		for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
			bfree(m, bufs[i]);
	}
	bfree(m, m->z);
	bfree(m, m->rstdf);
	float *h[] = { m->hu, m->ha, m->hrstd1, m->hf1, m->hf3, m->hg, m->hv,
		       m->hb, m->hrstd2, m->dcond, m->dhb, m->dhv, m->dha, m->dhf1,
		       m->dhf3, m->dhg };
	for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) bfree(m, h[i]);
	for (int j = 0; j < 3; j++) {
		bfree(m, m->logits[j]);
		bfree(m, m->dlogits[j]);
	}
	bfree(m, m->lossrow);
	bfree(m, m->eidx);
	bfree(m, m->tidx);
	bfree(m, m->cidx);
	bfree(m, m->bytes32);
	float *g[] = { m->dres, m->dn, m->datt, m->dq, m->dk, m->dv, m->dc,
		       m->dg, m->dh1, m->dh3, m->du, m->demb };
	for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) bfree(m, g[i]);
	free(m->h_idx);
	free(m->h_bytes);
	free(m->h_logits);
}

static arb_status create_trunk(arb_model *m, arb_error *err)
{
	arb_status s;
	int D = m->D, F = m->F, r = m->r;
	char nm[64];
	if ((s = mk(m, "emb", 3 * VOCAB, D, 3, &m->emb, err))) return s;
	for (int l = 0; l < m->L; l++) {
		block *b = &m->blk[l];
#define MK(field, suffix, rows, cols, fan) do { \
		snprintf(nm, sizeof nm, "blk%d.%s", l, suffix); \
		if ((s = mk(m, nm, rows, cols, fan, &b->field, err))) return s; \
	} while (0)
		snprintf(nm, sizeof nm, "blk%d.norm1", l);
		if ((s = mk_gain(m, nm, &b->n1, err))) return s;
		MK(q, "attn.q", D, D, D);
		if (r) {
			MK(dkv, "attn.dkv", r, D, D);
			MK(uk, "attn.uk", D, r, r);
			MK(uv, "attn.uv", D, r, r);
		} else {
			MK(k, "attn.k", D, D, D);
			MK(v, "attn.v", D, D, D);
		}
		MK(o, "attn.o", D, D, D);
		snprintf(nm, sizeof nm, "blk%d.norm2", l);
		if ((s = mk_gain(m, nm, &b->n2, err))) return s;
		if (!b->ffn_plugin) {
			MK(w1, "ffn.w1", F, D, D);
			MK(w3, "ffn.w3", F, D, D);
			MK(w2, "ffn.w2", D, F, F);
		}
#undef MK
	}
	if ((s = mk_gain(m, "norm_f", &m->norm_f, err))) return s;
	if ((s = mk(m, "head.cond", 2 * VOCAB + 3, D, 2, &m->cond, err))) return s;
	if ((s = mk_gain(m, "head.norm", &m->hnorm, err))) return s;
	if (m->Hh) {
		int Hh = m->Hh;
		if ((s = mk(m, "head.ffn.w1", Hh, D, D, &m->hw1, err))) return s;
		if ((s = mk(m, "head.ffn.w3", Hh, D, D, &m->hw3, err))) return s;
		if ((s = mk(m, "head.ffn.w2", D, Hh, Hh, &m->hw2, err))) return s;
		if ((s = mk_gain(m, "head.norm2", &m->hnorm2, err))) return s;
	}
	for (int j = 0; j < 3; j++) {
		snprintf(nm, sizeof nm, "head.out%d", j);
		if ((s = mk(m, nm, VOCAB, D, 4 * (int64_t)D, &m->out[j], err)))
			return s;
	}
	return ARB_OK;
}

arb_status arb_model_create(arb_model **out, const arb_cfg *cfg,
			    arb_backend *be, int batch, arb_error *err)
{
	*out = NULL;
	if (!cfg || !be)
		return ARB_FAIL(err, ARB_ERR_INVALID, "arb_model_create: NULL config or backend");
	if (batch < 1)
		return ARB_FAIL(err, ARB_ERR_INVALID, "arb_model_create: batch %d < 1", batch);
	const arb_conf *mc = arb_cfg_section(cfg, "model");
	const arb_conf *sc = arb_cfg_section(cfg, "schedule");
	const arb_conf *rc = arb_cfg_section(cfg, "run");
	if (!mc || !sc || !rc)
		return ARB_FAIL(err, ARB_ERR_CONFIG,
				"config lacks a core section ([model], [schedule] or [run])");
	arb_model *m = calloc(1, sizeof *m);
	if (!m) return ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
	arb_status s = ARB_OK;
	m->be = be;
	m->D = (int)arb_conf_int(mc, "d_model");
	m->L = (int)arb_conf_int(mc, "layers");
	m->H = (int)arb_conf_int(mc, "heads");
	m->T = (int)arb_conf_int(mc, "ctx");
	int64_t ffn = arb_conf_int(mc, "ffn_hidden");
	m->r = (int)arb_conf_int(mc, "latent_kv");
	m->pos_scale = arb_conf_float(mc, "pos_scale");
	m->Bmax = batch;
	uint64_t seed = (uint64_t)arb_conf_int(rc, "seed");
	if (m->D < 2 || m->H < 1 || m->D % m->H != 0) {
		s = ARB_FAIL(err, ARB_ERR_CONFIG,
			     "[model] d_model = %d must be a multiple of heads = %d",
			     m->D, m->H);
		goto fail;
	}
	m->hd = m->D / m->H;
	m->F = ffn > 0 ? (int)ffn : 4 * m->D;
	int64_t hh = arb_conf_int(mc, "head_hidden");
	m->Hh = hh < 0 ? 2 * m->D : (int)hh;
	if (m->r < 0 || m->r > m->D) {
		s = ARB_FAIL(err, ARB_ERR_CONFIG,
			     "[model] latent_kv = %d must be in 0..d_model (%d)",
			     m->r, m->D);
		goto fail;
	}
	if (m->T < 1) {
		s = ARB_FAIL(err, ARB_ERR_CONFIG, "[model] ctx = %d must be >= 1", m->T);
		goto fail;
	}
	if ((int64_t)batch * m->T > (int64_t)1 << 28) {
		s = ARB_FAIL(err, ARB_ERR_CONFIG,
			     "batch %d x ctx %d positions is too large", batch, m->T);
		goto fail;
	}
	if ((s = arb_sched_cfg_from_conf(&m->sched, sc, mc, seed, err))) goto fail;
	arb_registry_init(&m->reg, be, &m->sched);

	m->info.struct_size = sizeof m->info;
	m->info.d_model = m->D;
	m->info.n_layers = m->L;
	m->info.n_heads = m->H;
	m->info.ctx = m->T;
	m->info.batch = batch;
	m->info.group_size = m->sched.group_size;
	m->info.seed = seed;
	m->profile = arb_conf_bool(rc, "profile");
	m->hctx.info = m->info;
	m->hctx.be = be;
	m->hctx.reg = &m->reg;
	m->hctx.log_level = ARB_LOG_INFO;
	const char *lv = getenv("ARB_LOG_LEVEL");
	if (lv && *lv >= '0' && *lv <= '3') m->hctx.log_level = *lv - '0';

	m->blk = calloc(m->L ? m->L : 1, sizeof *m->blk);
	if (!m->blk) {
		s = ARB_FAIL(err, ARB_ERR_NOMEM, "out of memory");
		goto fail;
	}
	/* open and validate the plugins first (placement decides which trunk
	 * FFNs exist), then create the trunk tensors (stable ids), then the
	 * component instances */
	const char *ppath = arb_conf_str(rc, "plugin_path");
	if ((s = load_components(m, cfg, ppath && *ppath ? ppath : NULL, err)))
		goto fail;
	if ((s = create_trunk(m, err))) goto fail;
	if ((s = create_components(m, err))) goto fail;
	if ((s = alloc_acts(m, err))) goto fail;
	*out = m;
	return ARB_OK;
fail:
	arb_model_free(m);
	return s;
}

void arb_model_free(arb_model *m)
{
	if (!m) return;
	free_components(m);
	free_acts(m);
	if (m->reg.be) arb_registry_free(&m->reg);
	close_components(m);
	free(m->blk);
	free(m);
}

arb_registry *arb_model_registry(arb_model *m) { return &m->reg; }
const arb_model_info *arb_model_info_of(const arb_model *m) { return &m->info; }
const arb_sched_cfg *arb_model_sched(const arb_model *m) { return &m->sched; }

/* ------------------------------------------------------------------------
 * forward */

/* Upload the inputs of B sequences (each `stride` bytes, first 3T used) and
 * run the trunk up to z = nf(x_L). */
static arb_status trunk_forward(arb_model *m, const uint8_t *bytes,
				size_t stride, int B, int T, int training,
				arb_error *err)
{
	arb_backend *be = m->be;
	int64_t M = (int64_t)B * T;
	int D = m->D, F = m->F, r = m->r;
	arb_status s;
	/* embedding rows, slot-major: eidx[j*M + b*T + p] = 256 j + byte */
	for (int b = 0; b < B; b++)
		for (int p = 0; p < T; p++)
			for (int j = 0; j < 3; j++) {
				int byte = bytes[(size_t)b * stride + 3 * p + j];
				m->h_idx[j * M + (int64_t)b * T + p] = VOCAB * j + byte;
				m->h_bytes[(int64_t)b * 3 * T + 3 * p + j] = byte;
			}
	be->upload(be, m->eidx, m->h_idx, 3 * M * sizeof(int32_t));
	be->upload(be, m->bytes32, m->h_bytes, 3 * M * sizeof(int32_t));

	/* x0 = sum_j Emb[eidx_j] + pos_scale * pos       [M, D] */
	float *x = m->xs[0];
	for (int j = 0; j < 3; j++)
		be->embed_forward(be, m->emb, m->eidx + j * M, M, x, j > 0);
	be->add_rows(be, x, m->pos, M, T, D, (float)m->pos_scale);
	arb_io io;
	io_init(m, &io, B, T, -1, training);
	io.x = x;
	io.y = x;
	if ((s = run_slot(m, ARB_SLOT_INPUT, -1, 0, &io, err))) return s;
	if (m->L == 0 && (s = run_slot(m, ARB_SLOT_RESIDUAL, -1, 0, &io, err)))
		return s;

	for (int l = 0; l < m->L; l++) {
		block *bk = &m->blk[l];
		float *xin = m->xs[l], *xout = m->xs[l + 1];
		/* attention */
		be->rmsnorm_forward(be, bk->n1, xin, bk->h1, bk->rstd1, M, D);
		be->linear_forward(be, bk->q, bk->h1, bk->q_a, M, 0);
		if (r) {
			be->linear_forward(be, bk->dkv, bk->h1, bk->c_a, M, 0);
			be->linear_forward(be, bk->uk, bk->c_a, bk->k_a, M, 0);
			be->linear_forward(be, bk->uv, bk->c_a, bk->v_a, M, 0);
		} else {
			be->linear_forward(be, bk->k, bk->h1, bk->k_a, M, 0);
			be->linear_forward(be, bk->v, bk->h1, bk->v_a, M, 0);
		}
		be->attention_forward(be, bk->q_a, bk->k_a, bk->v_a, bk->att,
				      bk->lse, B, T, m->H, m->hd);
		be->copy(be, bk->xmid, xin, M * D * sizeof(float));
		be->linear_forward(be, bk->o, bk->att, bk->xmid, M, 1);
		/* FFN */
		be->rmsnorm_forward(be, bk->n2, bk->xmid, bk->h2, bk->rstd2, M, D);
		be->copy(be, xout, bk->xmid, M * D * sizeof(float));
		if (bk->ffn_plugin) {
			io_init(m, &io, B, T, l, training);
			io.x = bk->h2;
			io.y = xout;
			if ((s = run_slot(m, ARB_SLOT_FFN, l, 0, &io, err))) return s;
		} else {
			be->linear_forward(be, bk->w1, bk->h2, bk->a1, M, 0);
			be->linear_forward(be, bk->w3, bk->h2, bk->a3, M, 0);
			be->swiglu_forward(be, bk->a1, bk->a3, bk->g, M * F);
			be->linear_forward(be, bk->w2, bk->g, xout, M, 1);
		}
		io_init(m, &io, B, T, l, training);
		io.x = xout;
		io.y = xout;
		if ((s = run_slot(m, ARB_SLOT_RESIDUAL, l, 0, &io, err))) return s;
	}
	be->rmsnorm_forward(be, m->norm_f, m->xs[m->L], m->z, m->rstdf, M, D);
	return ARB_OK;
}

/* ByteHead for slots j0..j1-1 over M rows of z (slot j's rows at j*M of
 * every head buffer). cidx holds its 6 segments of M rows (see struct). */
static void head_forward(arb_model *m, const float *z, int64_t M, int j0,
			 int j1)
{
	arb_backend *be = m->be;
	int D = m->D, Hh = m->Hh;
	size_t MD = (size_t)M * D, f = sizeof(float);
	static const int seg0[3] = { 0, 1, 3 };   /* first cidx segment of slot j */
	for (int j = j0; j < j1; j++) {
		float *u = m->hu + j * MD;
		be->copy(be, u, z, MD * f);
		for (int k = 0; k <= j; k++)        /* slot j adds j + 1 rows */
			be->embed_forward(be, m->cond, m->cidx + (seg0[j] + k) * M, M,
					  u, 1);
	}
	int64_t R = (int64_t)(j1 - j0) * M;        /* rows of these slots */
	size_t o = (size_t)j0 * MD, oh = (size_t)j0 * M * Hh;
	be->rmsnorm_forward(be, m->hnorm, m->hu + o, m->ha + o,
			    m->hrstd1 + (size_t)j0 * M, R, D);
	if (Hh) {
		be->linear_forward(be, m->hw1, m->ha + o, m->hf1 + oh, R, 0);
		be->linear_forward(be, m->hw3, m->ha + o, m->hf3 + oh, R, 0);
		be->swiglu_forward(be, m->hf1 + oh, m->hf3 + oh, m->hg + oh, R * Hh);
		be->copy(be, m->hv + o, m->hu + o, (size_t)R * D * f);
		be->linear_forward(be, m->hw2, m->hg + oh, m->hv + o, R, 1);
		be->rmsnorm_forward(be, m->hnorm2, m->hv + o, m->hb + o,
				    m->hrstd2 + (size_t)j0 * M, R, D);
	}
	for (int j = j0; j < j1; j++)
		be->linear_forward(be, m->out[j], m->hin + j * MD, m->logits[j], M, 0);
}

arb_status arb_model_forward(arb_model *m, const uint8_t *bytes, int B,
			     int training, double *loss, arb_error *err)
{
	if (!bytes || !loss)
		return ARB_FAIL(err, ARB_ERR_INVALID, "forward: NULL bytes or loss");
	if (B < 1 || B > m->Bmax)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"forward: batch %d outside 1..%d (the batch the model "
				"was created for)", B, m->Bmax);
	arb_backend *be = m->be;
	int T = m->T;
	int64_t M = (int64_t)B * T;
	size_t S = 3 * (size_t)(T + 1);
	m->fwd_training = 0;
	m->prof_live = training;
	double t0 = prof_begin(m);
	arb_status s = trunk_forward(m, bytes, S, B, T, training, err);
	if (s) return s;
	/* targets and conditioning rows */
	int32_t *tg = m->h_idx;
	for (int b = 0; b < B; b++)
		for (int p = 0; p < T; p++)
			for (int j = 0; j < 3; j++)
				tg[j * M + (int64_t)b * T + p] =
					bytes[(size_t)b * S + 3 * (p + 1) + j];
	be->upload(be, m->tidx, tg, 3 * M * sizeof(int32_t));
	for (int64_t i = 0; i < M; i++) {          /* in place: read first */
		int c0 = tg[i], c1 = tg[M + i];
		tg[i] = 2 * VOCAB;
		tg[M + i] = c0;
		tg[2 * M + i] = 2 * VOCAB + 1;
		tg[3 * M + i] = c0;
		tg[4 * M + i] = VOCAB + c1;
		tg[5 * M + i] = 2 * VOCAB + 2;
	}
	be->upload(be, m->cidx, tg, 6 * M * sizeof(int32_t));
	head_forward(m, m->z, M, 0, 3);
	double total = 0;
	float gs = (float)(1.0 / (3.0 * (double)M));
	for (int j = 0; j < 3; j++) {
		be->cross_entropy(be, m->logits[j], m->tidx + j * M, M, VOCAB,
				  m->lossrow, training ? m->dlogits[j] : NULL, gs);
		total += be->sum(be, m->lossrow, M);
	}
	*loss = total / (3.0 * (double)M);
	if (training) {
		m->prof[0] += prof_end(m, t0);
		m->prof_n[0]++;
		m->prof_live = 0;
		m->fwd_training = 1;
		m->fwd_B = B;
		m->fwd_T = T;
	}
	return ARB_OK;
}

/* ------------------------------------------------------------------------
 * backward */

arb_status arb_model_backward(arb_model *m, const arb_vote *v, arb_error *err)
{
	if (!m->fwd_training)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"backward: no training forward to differentiate "
				"(call arb_model_forward with training = 1 first)");
	if (!v) return ARB_FAIL(err, ARB_ERR_INVALID, "backward: NULL vote");
	arb_backend *be = m->be;
	int B = m->fwd_B, T = m->fwd_T, D = m->D, F = m->F, r = m->r;
	int64_t M = (int64_t)B * T;
	size_t MD = (size_t)M * D * sizeof(float);
	arb_status s;
	m->fwd_training = 0;   /* one backward per training forward */
	m->prof_live = 1;
	double t0 = prof_begin(m);

	/* ByteHead over the 3M stacked slot rows */
	int Hh = m->Hh;
	int64_t R = 3 * M;
	size_t f = sizeof(float);
	float *du[3];
	for (int j = 0; j < 3; j++) {
		du[j] = m->du + (size_t)j * M * D;
		be->linear_backward_x(be, m->out[j], m->dlogits[j],
				      m->dhb + (size_t)j * M * D, M, 0);
		be->linear_vote(be, m->out[j], m->hin + (size_t)j * M * D,
				m->dlogits[j], M, v);
	}
	if (Hh) {
		/* h = nh2(v), v = u + W2 g, g = silu(W1 a) * W3 a, a = nh(u) */
		be->rmsnorm_backward(be, m->hnorm2, m->hv, m->hrstd2, m->dhb, m->dhv,
				     R, D, 0);
		be->linear_backward_x(be, m->hw2, m->dhv, m->dhg, R, 0);
		be->linear_vote(be, m->hw2, m->hg, m->dhv, R, v);
		be->swiglu_backward(be, m->hf1, m->hf3, m->dhg, m->dhf1, m->dhf3,
				    R * Hh);
		be->linear_backward_x(be, m->hw1, m->dhf1, m->dha, R, 0);
		be->linear_backward_x(be, m->hw3, m->dhf3, m->dha, R, 1);
		be->linear_vote(be, m->hw1, m->ha, m->dhf1, R, v);
		be->linear_vote(be, m->hw3, m->ha, m->dhf3, R, v);
		be->copy(be, m->du, m->dhv, (size_t)R * D * f);
		be->rmsnorm_backward(be, m->hnorm, m->hu, m->hrstd1, m->dha, m->du,
				     R, D, 1);
	} else {
		be->rmsnorm_backward(be, m->hnorm, m->hu, m->hrstd1, m->dhb, m->du,
				     R, D, 0);
	}
	/* cond table: one vote call over the 6 segments of cidx against
	 * [du0 | du1 | du1 | du2 | du2 | du2], so duplicates sum first */
	static const int seg_slot[6] = { 0, 1, 1, 2, 2, 2 };
	for (int k = 0; k < 6; k++)
		be->copy(be, m->dcond + (size_t)k * M * D, du[seg_slot[k]], MD);
	be->embed_vote(be, m->cond, m->cidx, 6 * M, m->dcond, v);
	/* dz = du0 + du1 + du2 */
	be->axpy(be, du[0], du[1], 1.0f, M * D);
	be->axpy(be, du[0], du[2], 1.0f, M * D);
	be->rmsnorm_backward(be, m->norm_f, m->xs[m->L], m->rstdf, du[0], m->dres,
			     M, D, 0);

	arb_io io;
	for (int l = m->L - 1; l >= 0; l--) {
		block *bk = &m->blk[l];
		/* residual components after this block (dx == dy, in place) */
		io_init(m, &io, B, T, l, 1);
		io.x = m->xs[l + 1];
		io.dy = m->dres;
		io.dx = m->dres;
		io.vote = v;
		if ((s = run_slot(m, ARB_SLOT_RESIDUAL, l, 1, &io, err))) return s;
		/* FFN: dres is the gradient of xout = xmid + FFN(h2) */
		if (bk->ffn_plugin) {
			be->zero(be, m->dn, MD);
			io_init(m, &io, B, T, l, 1);
			io.x = bk->h2;
			io.dy = m->dres;
			io.dx = m->dn;
			io.vote = v;
			if ((s = run_slot(m, ARB_SLOT_FFN, l, 1, &io, err))) return s;
		} else {
			be->linear_backward_x(be, bk->w2, m->dres, m->dg, M, 0);
			be->linear_vote(be, bk->w2, bk->g, m->dres, M, v);
			be->swiglu_backward(be, bk->a1, bk->a3, m->dg, m->dh1, m->dh3,
					    M * F);
			be->linear_backward_x(be, bk->w1, m->dh1, m->dn, M, 0);
			be->linear_backward_x(be, bk->w3, m->dh3, m->dn, M, 1);
			be->linear_vote(be, bk->w1, bk->h2, m->dh1, M, v);
			be->linear_vote(be, bk->w3, bk->h2, m->dh3, M, v);
		}
		be->rmsnorm_backward(be, bk->n2, bk->xmid, bk->rstd2, m->dn, m->dres,
				     M, D, 1);
		/* attention: dres is the gradient of xmid = xin + O att */
		be->linear_backward_x(be, bk->o, m->dres, m->datt, M, 0);
		be->linear_vote(be, bk->o, bk->att, m->dres, M, v);
		be->attention_backward(be, bk->q_a, bk->k_a, bk->v_a, bk->att,
				       bk->lse, m->datt, m->dq, m->dk, m->dv, B, T,
				       m->H, m->hd);
		be->linear_backward_x(be, bk->q, m->dq, m->dn, M, 0);
		be->linear_vote(be, bk->q, bk->h1, m->dq, M, v);
		if (r) {
			be->linear_backward_x(be, bk->uk, m->dk, m->dc, M, 0);
			be->linear_backward_x(be, bk->uv, m->dv, m->dc, M, 1);
			be->linear_vote(be, bk->uk, bk->c_a, m->dk, M, v);
			be->linear_vote(be, bk->uv, bk->c_a, m->dv, M, v);
			be->linear_backward_x(be, bk->dkv, m->dc, m->dn, M, 1);
			be->linear_vote(be, bk->dkv, bk->h1, m->dc, M, v);
		} else {
			be->linear_backward_x(be, bk->k, m->dk, m->dn, M, 1);
			be->linear_backward_x(be, bk->v, m->dv, m->dn, M, 1);
			be->linear_vote(be, bk->k, bk->h1, m->dk, M, v);
			be->linear_vote(be, bk->v, bk->h1, m->dv, M, v);
		}
		be->rmsnorm_backward(be, bk->n1, m->xs[l], bk->rstd1, m->dn, m->dres,
				     M, D, 1);
	}
	/* components at the embedding */
	io_init(m, &io, B, T, -1, 1);
	io.x = m->xs[0];
	io.dy = m->dres;
	io.dx = m->dres;
	io.vote = v;
	if (m->L == 0 && (s = run_slot(m, ARB_SLOT_RESIDUAL, -1, 1, &io, err)))
		return s;
	if ((s = run_slot(m, ARB_SLOT_INPUT, -1, 1, &io, err))) return s;
	/* embedding: the three slots touch disjoint rows; one vote call over
	 * [dx0 | dx0 | dx0] against eidx */
	for (int j = 0; j < 3; j++)
		be->copy(be, m->demb + (size_t)j * M * D, m->dres, MD);
	be->embed_vote(be, m->emb, m->eidx, 3 * M, m->demb, v);
	m->prof[1] += prof_end(m, t0);
	m->prof_n[1]++;
	m->prof_live = 0;
	return ARB_OK;
}

/* ------------------------------------------------------------------------
 * step */

arb_status arb_model_step(arb_model *m, uint64_t t, arb_step_stats *st,
			  arb_error *err)
{
	arb_step_stats local;
	if (!st) st = &local;
	memset(st, 0, sizeof *st);
	m->prof_live = 1;
	double t0 = prof_begin(m);
	arb_registry_step(&m->reg, t, st);
	for (int i = 0; i < m->n_comps; i++) {
		arb_component *c = m->comps[i];
		if (!c->lp.desc->after_step) continue;
		if (err) err->msg[0] = 0;
		double t1 = prof_begin(m);
		arb_status s = c->lp.desc->after_step(c->self, t, err);
		c->prof[2] += prof_end(m, t1);
		if (s) return comp_fail(c, "after_step", s, err);
	}
	m->prof[2] += prof_end(m, t0);
	m->prof_n[2]++;
	m->prof_live = 0;
	return ARB_OK;
}

/* ------------------------------------------------------------------------
 * sampling */

/* pick a byte from 256 logits: greedy when temperature == 0, else softmax
 * of logits / temperature over the top_k largest (all when 0); u in [0,1) */
static int pick_byte(const float *lg, double temperature, int top_k, double u)
{
	int best = 0;
	for (int i = 1; i < VOCAB; i++)
		if (lg[i] > lg[best]) best = i;
	if (temperature <= 0) return best;
	int k = top_k > 0 && top_k < VOCAB ? top_k : VOCAB;
	/* the k-th largest logit as the cut (ties at the cut kept by index) */
	int order[VOCAB];
	for (int i = 0; i < VOCAB; i++) order[i] = i;
	for (int a = 0; a < k; a++) {      /* partial selection sort */
		int mx = a;
		for (int b = a + 1; b < VOCAB; b++)
			if (lg[order[b]] > lg[order[mx]]) mx = b;
		int tmp = order[a]; order[a] = order[mx]; order[mx] = tmp;
	}
	double p[VOCAB], sum = 0, top = lg[best];
	for (int a = 0; a < k; a++) {
		p[a] = exp(((double)lg[order[a]] - top) / temperature);
		sum += p[a];
	}
	double target = u * sum, acc = 0;
	for (int a = 0; a < k; a++) {
		acc += p[a];
		if (target < acc) return order[a];
	}
	return order[k - 1];
}

arb_status arb_model_sample(arb_model *m, const uint8_t *prompt, size_t n,
			    size_t gen, double temperature, int top_k,
			    uint64_t seed, uint8_t *out, size_t *out_len,
			    arb_error *err)
{
	if ((n && !prompt) || !out || !out_len)
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"sample: NULL prompt, output buffer or length");
	if (!(temperature >= 0) || !isfinite(temperature))
		return ARB_FAIL(err, ARB_ERR_INVALID,
				"sample: temperature %g must be >= 0", temperature);
	if (top_k < 0)
		return ARB_FAIL(err, ARB_ERR_INVALID, "sample: top_k %d < 0", top_k);
	arb_backend *be = m->be;
	/* left-pad with spaces to a multiple of 3 (an empty prompt becomes one
	 * trigram of spaces) */
	size_t pad = (3 - n % 3) % 3;
	if (n == 0) pad = 3;
	memset(out, ' ', pad);
	if (n) memcpy(out + pad, prompt, n);
	size_t len = pad + n;
	m->fwd_training = 0;
	uint64_t stream = arb_rng_stream(0, 0, ARB_RNG_SAMPLE);
	uint64_t draw = 0;
	size_t produced = 0;
	int32_t cidx[6];
	while (produced < gen) {
		size_t ntri = len / 3;
		int T = ntri < (size_t)m->T ? (int)ntri : m->T;
		const uint8_t *win = out + len - 3 * (size_t)T;
		arb_status s = trunk_forward(m, win, 3 * (size_t)T, 1, T, 0, err);
		if (s) return s;
		const float *zl = m->z + (size_t)(T - 1) * m->D;
		int c[3] = { 0, 0, 0 };
		for (int j = 0; j < 3; j++) {
			/* the 6 cond segments for one row (M = 1) */
			cidx[0] = 2 * VOCAB;
			cidx[1] = c[0];
			cidx[2] = 2 * VOCAB + 1;
			cidx[3] = c[0];
			cidx[4] = VOCAB + c[1];
			cidx[5] = 2 * VOCAB + 2;
			be->upload(be, m->cidx, cidx, sizeof cidx);
			head_forward(m, zl, 1, j, j + 1);
			be->download(be, m->h_logits, m->logits[j],
				     VOCAB * sizeof(float));
			double u = arb_rng_unit(seed, stream, draw++);
			c[j] = pick_byte(m->h_logits, temperature, top_k, u);
		}
		for (int j = 0; j < 3 && produced < gen; j++, produced++)
			out[len++] = (uint8_t)c[j];
		/* a partial final trigram ends the loop (produced == gen) */
	}
	*out_len = len;
	return ARB_OK;
}

/* ------------------------------------------------------------------------
 * components' extra state and metrics */

/* record names are prefixed "<instance>." on their way to the caller's io */
typedef struct prefixed_io {
	const arb_state_io *io;
	const char *instance;
} prefixed_io;

static arb_status prefixed_name(const prefixed_io *p, const char *name,
				char *buf, size_t cap)
{
	int n = snprintf(buf, cap, "%s.%s", p->instance, name ? name : "");
	return (n < 0 || (size_t)n >= cap) ? ARB_ERR_INVALID : ARB_OK;
}

static arb_status prefixed_write(void *ctx, const char *name, const void *data,
				 size_t bytes)
{
	const prefixed_io *p = ctx;
	char full[256];
	if (prefixed_name(p, name, full, sizeof full)) return ARB_ERR_INVALID;
	return p->io->write(p->io->ctx, full, data, bytes);
}

static arb_status prefixed_read(void *ctx, const char *name, void *data,
				size_t bytes)
{
	const prefixed_io *p = ctx;
	char full[256];
	if (prefixed_name(p, name, full, sizeof full)) return ARB_ERR_INVALID;
	return p->io->read(p->io->ctx, full, data, bytes);
}

static arb_status extra_io(arb_model *m, const arb_state_io *io, int load,
			   arb_error *err)
{
	for (int i = 0; i < m->n_comps; i++) {
		arb_component *c = m->comps[i];
		const arb_plugin *d = c->lp.desc;
		arb_status (*fn)(void *, const arb_state_io *, arb_error *) =
			load ? d->load : d->save;
		if (!fn) continue;
		prefixed_io p = { io, c->instance };
		arb_state_io wrapped = { &p, prefixed_write, prefixed_read };
		if (err) err->msg[0] = 0;
		arb_status s = fn(c->self, &wrapped, err);
		if (s) return comp_fail(c, load ? "load" : "save", s, err);
	}
	return ARB_OK;
}

arb_status arb_model_save_extra(arb_model *m, const arb_state_io *io,
				arb_error *err)
{
	return extra_io(m, io, 0, err);
}

arb_status arb_model_load_extra(arb_model *m, const arb_state_io *io,
				arb_error *err)
{
	return extra_io(m, io, 1, err);
}

int arb_model_profile(arb_model *m, char *buf, size_t cap)
{
	if (!buf || cap == 0) return 0;
	buf[0] = 0;
	if (!m->profile || m->prof_n[0] == 0) return 0;
	static const char *what[3] = { "forward", "backward", "step" };
	size_t used = 0;
	for (int k = 0; k < 3; k++) {
		double n = m->prof_n[k] ? (double)m->prof_n[k] : 1.0;
		double rest = m->prof[k];
		for (int i = 0; i < m->n_comps; i++) rest -= m->comps[i]->prof[k];
		int w = snprintf(buf + used, cap - used, "%s%s %.2f ms (%s %.2f",
				 k ? " | " : "", what[k], 1e3 * m->prof[k] / n,
				 k == 2 ? "update" : "trunk", 1e3 * rest / n);
		if (w < 0 || (size_t)w >= cap - used) break;
		used += (size_t)w;
		for (int i = 0; i < m->n_comps; i++) {
			arb_component *c = m->comps[i];
			if (c->prof[k] <= 0) continue;
			w = snprintf(buf + used, cap - used, ", %s %.2f", c->section,
				     1e3 * c->prof[k] / n);
			if (w < 0 || (size_t)w >= cap - used) break;
			used += (size_t)w;
		}
		if (used + 2 < cap) { buf[used++] = ')'; buf[used] = 0; }
	}
	for (int k = 0; k < 3; k++) {
		m->prof[k] = 0;
		m->prof_n[k] = 0;
		for (int i = 0; i < m->n_comps; i++) m->comps[i]->prof[k] = 0;
	}
	return (int)used;
}

/* "k=v k=v": each component's own metrics, then "<instance>.aux_loss=v"
 * for components that reported an auxiliary loss in their last forward */
int arb_model_metrics(arb_model *m, char *buf, size_t cap)
{
	size_t used = 0;
	if (!buf || cap == 0) return 0;
	buf[0] = 0;
	for (int i = 0; i < m->n_comps && used + 2 < cap; i++) {
		arb_component *c = m->comps[i];
		if (c->lp.desc->metrics) {
			size_t at = used;
			if (used) buf[used++] = ' ';
			buf[used] = 0;
			int w = c->lp.desc->metrics(c->self, buf + used, cap - used);
			if (w <= 0) {
				used = at;       /* nothing written: drop the space */
			} else {
				used += (size_t)w < cap - used ? (size_t)w : cap - used - 1;
			}
			buf[used] = 0;
		}
		if (c->aux_loss != 0 && used + 2 < cap) {
			int w = snprintf(buf + used, cap - used, "%s%s.aux_loss=%.4f",
					 used ? " " : "", c->instance, c->aux_loss);
			if (w > 0)
				used += (size_t)w < cap - used ? (size_t)w : cap - used - 1;
		}
	}
	return (int)used;
}
