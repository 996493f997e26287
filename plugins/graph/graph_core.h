/*
 * plugins/graph/graph_core.h -- host-side parts of MoEGraph, plain C11 and
 * static (included by graph.c and by tests/check_graph.c, never exported):
 *
 *   - the CPU reference of graph_kern.h (the definition of record);
 *   - the bounded edge list: struct-of-arrays int32 src, int32 dst, int8
 *     sign, int8 score, int8 vote, capacity `cap`, with an open-addressing
 *     hash (src, dst) -> slot. Updates (README.md "Edges"):
 *       gedge_observe  every (c[b,t], c[b,u]) with t < u <= t + window,
 *                      c[b,t] != c[b,u]: score = min(score + 1, 127); a new
 *                      pair enters with sign +1, score 0 (+1 for this event);
 *       gedge_commit   if more than cap edges: keep the cap highest scores,
 *                      ties kept in slot order (older edges first); order of
 *                      the kept edges preserved; hash rebuilt;
 *       gedge_decay    score -= 1 for every edge; edges at 0 are removed;
 *       gedge_vote/gedge_settle  the sign's int8 accumulator (see graph.c).
 *   - the active subgraph of a batch: nodes = codes of the batch plus the
 *     other endpoints of edges touching them; edges = the list's edges with
 *     both ends active; CSR by target and by source; position <-> node maps.
 * Invariants of the list: no duplicate (src, dst), n <= cap after commit,
 * 0 <= src, dst < nodes, src != dst.
 */
#ifndef GRAPH_CORE_H
#define GRAPH_CORE_H

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "graph_kern.h"

/* ------------------------------------------------------------------------
 * CPU reference kernels */

static void gcpu_csr(int64_t rows, int D, const int32_t *ptr,
		     const int32_t *col, const float *w, const float *in,
		     float *out, int accumulate)
{
	for (int64_t r = 0; r < rows; r++) {
		float *o = out + r * D;
		if (!accumulate)
			for (int d = 0; d < D; d++) o[d] = 0.0f;
		for (int32_t k = ptr[r]; k < ptr[r + 1]; k++) {
			const float *x = in + (int64_t)col[k] * D;
			float wk = w[k];
			for (int d = 0; d < D; d++) o[d] += wk * x[d];
		}
	}
}

static void gcpu_edge_dot(int64_t n, int D, const int32_t *src,
			  const int32_t *dst, const float *scale,
			  const float *Mg, const float *dA, float *g)
{
	for (int64_t k = 0; k < n; k++) {
		const float *a = dA + (int64_t)dst[k] * D;
		const float *b = Mg + (int64_t)src[k] * D;
		float s = 0.0f;
		for (int d = 0; d < D; d++) s += a[d] * b[d];
		g[k] += scale[k] * s;
	}
}

static void gcpu_act_step(int64_t M, int it, int last, float thr,
			  const float *p, float *cum, int32_t *run, int32_t *n,
			  float *w, float *rho, int32_t *n_run)
{
	int32_t left = 0;
	for (int64_t m = 0; m < M; m++) {
		if (!run[m]) { w[m] = 0.0f; continue; }
		if (last || cum[m] + p[m] >= thr) {
			w[m] = 1.0f - cum[m];
			n[m] = it + 1;
			rho[m] = (float)(it + 1) + w[m];
			run[m] = 0;
		} else {
			w[m] = p[m];
			cum[m] += p[m];
			left++;
		}
	}
	*n_run = left;
}

static void gcpu_sigmoid(int64_t M, const float *z, float bias, float *p)
{
	for (int64_t m = 0; m < M; m++) p[m] = 1.0f / (1.0f + expf(-(z[m] + bias)));
}

static void gcpu_row_axpy(int64_t M, int D, const float *a, const float *x,
			  float *y)
{
	for (int64_t m = 0; m < M; m++)
		for (int d = 0; d < D; d++) y[m * D + d] += a[m] * x[m * D + d];
}

static void gcpu_row_dot(int64_t M, int D, const float *a, const float *b,
			 float *out)
{
	for (int64_t m = 0; m < M; m++) {
		float s = 0.0f;
		for (int d = 0; d < D; d++) s += a[m * D + d] * b[m * D + d];
		out[m] = s;
	}
}

static void gcpu_act_grad(int64_t M, int it, const float *p, const int32_t *n,
			  const float *dw, float tau_m, float *dz)
{
	for (int64_t m = 0; m < M; m++) {
		if (it >= n[m] - 1) { dz[m] = 0.0f; continue; }
		float dp = dw[(int64_t)it * M + m] - dw[(int64_t)(n[m] - 1) * M + m] -
			   tau_m;
		dz[m] = dp * p[m] * (1.0f - p[m]);
	}
}

static int gcpu_check(char *msg, size_t cap) { (void)msg; (void)cap; return 0; }

static const graph_kernels graph_cpu_kernels = {
	gcpu_csr, gcpu_edge_dot, gcpu_act_step, gcpu_sigmoid, gcpu_row_axpy,
	gcpu_row_dot, gcpu_act_grad, gcpu_check,
};

/* ------------------------------------------------------------------------
 * open-addressing hash: int64 key -> int32 value (>= 0), linear probing */

typedef struct ghash {
	int64_t *key;
	int32_t *val;   /* -1 = empty */
	int64_t size;   /* power of two */
} ghash;

static uint64_t ghash_mix(uint64_t z)
{
	z ^= z >> 33;
	z *= 0xff51afd7ed558ccdull;
	z ^= z >> 33;
	z *= 0xc4ceb9fe1a85ec53ull;
	return z ^ (z >> 33);
}

static int ghash_init(ghash *h, int64_t entries)
{
	int64_t s = 16;
	while (s < 2 * entries) s <<= 1;
	h->size = s;
	h->key = malloc((size_t)s * sizeof *h->key);
	h->val = malloc((size_t)s * sizeof *h->val);
	if (!h->key || !h->val) return -1;
	for (int64_t i = 0; i < s; i++) h->val[i] = -1;
	return 0;
}

static void ghash_free(ghash *h)
{
	free(h->key);
	free(h->val);
	h->key = NULL;
	h->val = NULL;
}

static void ghash_clear(ghash *h)
{
	for (int64_t i = 0; i < h->size; i++) h->val[i] = -1;
}

/* slot of key (found or the empty slot where it belongs) */
static int64_t ghash_slot(const ghash *h, int64_t key)
{
	int64_t i = (int64_t)(ghash_mix((uint64_t)key) & (uint64_t)(h->size - 1));
	while (h->val[i] >= 0 && h->key[i] != key) i = (i + 1) & (h->size - 1);
	return i;
}

static int32_t ghash_get(const ghash *h, int64_t key)
{
	return h->val[ghash_slot(h, key)];
}

static void ghash_put(ghash *h, int64_t key, int32_t v)
{
	int64_t i = ghash_slot(h, key);
	h->key[i] = key;
	h->val[i] = v;
}

static int64_t gedge_key(int32_t s, int32_t d)
{
	return (int64_t)(((uint64_t)(uint32_t)s << 32) | (uint32_t)d);
}

/* ------------------------------------------------------------------------
 * the bounded edge list */

typedef struct gedges {
	int64_t cap;     /* capacity after commit */
	int64_t room;    /* cap + headroom for new pairs of one step */
	int64_t n;
	int32_t *src, *dst;
	int8_t *sign, *score, *vote;
	ghash h;
	int64_t dropped; /* new pairs refused because the headroom was full */
	int64_t evicted; /* edges evicted by commit (total) */
} gedges;

static void gedge_free(gedges *e)
{
	free(e->src);
	free(e->dst);
	free(e->sign);
	free(e->score);
	free(e->vote);
	ghash_free(&e->h);
	memset(e, 0, sizeof *e);
}

static int gedge_init(gedges *e, int64_t cap, int64_t headroom)
{
	memset(e, 0, sizeof *e);
	e->cap = cap;
	e->room = cap + (headroom > 0 ? headroom : 1);
	size_t r = (size_t)e->room;
	e->src = malloc(r * 4);
	e->dst = malloc(r * 4);
	e->sign = calloc(r, 1);
	e->score = calloc(r, 1);
	e->vote = calloc(r, 1);
	if (!e->src || !e->dst || !e->sign || !e->score || !e->vote ||
	    ghash_init(&e->h, e->room)) {
		gedge_free(e);
		return -1;
	}
	return 0;
}

static void gedge_rehash(gedges *e)
{
	ghash_clear(&e->h);
	for (int64_t i = 0; i < e->n; i++)
		ghash_put(&e->h, gedge_key(e->src[i], e->dst[i]), (int32_t)i);
}

/* one co-occurrence event src -> dst */
static void gedge_event(gedges *e, int32_t s, int32_t d)
{
	int64_t key = gedge_key(s, d);
	int64_t slot = ghash_slot(&e->h, key);
	int32_t i = e->h.val[slot];
	if (i < 0) {
		if (e->n >= e->room) { e->dropped++; return; }
		i = (int32_t)e->n++;
		e->src[i] = s;
		e->dst[i] = d;
		e->sign[i] = 1;
		e->score[i] = 0;
		e->vote[i] = 0;
		e->h.key[slot] = key;
		e->h.val[slot] = i;
	}
	if (e->score[i] < 127) e->score[i]++;
}

/* codes [B, T] (host memory) */
static void gedge_observe(gedges *e, const int32_t *codes, int B, int T,
			  int window)
{
	for (int b = 0; b < B; b++) {
		const int32_t *c = codes + (int64_t)b * T;
		for (int t = 0; t < T; t++)
			for (int u = t + 1; u <= t + window && u < T; u++)
				if (c[t] != c[u]) gedge_event(e, c[t], c[u]);
	}
}

static void gedge_compact(gedges *e, const uint8_t *keep)
{
	int64_t j = 0;
	for (int64_t i = 0; i < e->n; i++) {
		if (!keep[i]) continue;
		e->src[j] = e->src[i];
		e->dst[j] = e->dst[i];
		e->sign[j] = e->sign[i];
		e->score[j] = e->score[i];
		e->vote[j] = e->vote[i];
		j++;
	}
	e->n = j;
	gedge_rehash(e);
}

/* evict down to cap: keep the highest scores, ties in slot order */
static int gedge_commit(gedges *e)
{
	if (e->n <= e->cap) return 0;
	int64_t hist[128] = { 0 };
	for (int64_t i = 0; i < e->n; i++) hist[e->score[i] < 0 ? 0 : e->score[i]]++;
	int64_t above = 0;
	int s = 127;
	while (s > 0 && above + hist[s] <= e->cap) above += hist[s--];
	/* keep every score > s, and the first (cap - above) of score == s */
	int64_t tie = e->cap - above;
	uint8_t *keep = malloc((size_t)e->n);
	if (!keep) return -1;
	for (int64_t i = 0; i < e->n; i++) {
		int sc = e->score[i] < 0 ? 0 : e->score[i];
		keep[i] = sc > s || (sc == s && tie-- > 0);
	}
	e->evicted += e->n - e->cap;
	gedge_compact(e, keep);
	free(keep);
	return 0;
}

static int gedge_decay(gedges *e)
{
	uint8_t *keep = malloc((size_t)(e->n ? e->n : 1));
	if (!keep) return -1;
	int64_t gone = 0;
	for (int64_t i = 0; i < e->n; i++) {
		if (e->score[i] > 0) e->score[i]--;
		keep[i] = e->score[i] > 0;
		gone += !keep[i];
	}
	if (gone) gedge_compact(e, keep);
	free(keep);
	return 0;
}

/* sign accumulator: a positive gradient lowers vote (like T_accum) */
static void gedge_vote(gedges *e, int64_t i, float g)
{
	int v = e->vote[i] - (g > 0.0f) + (g < 0.0f);
	e->vote[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
}

/* |vote| >= thr: the sign moves one step toward sign(vote), vote = 0; at
 * the end of the ladder the vote is held at +-thr. Returns the moves. */
static int64_t gedge_settle(gedges *e, int thr)
{
	int64_t moved = 0;
	for (int64_t i = 0; i < e->n; i++) {
		int v = e->vote[i];
		if (v < thr && v > -thr) continue;
		int dir = v > 0 ? 1 : -1;
		if (e->sign[i] == dir) {
			e->vote[i] = (int8_t)(dir * thr);
		} else {
			e->sign[i] = (int8_t)(e->sign[i] + dir);
			e->vote[i] = 0;
			moved++;
		}
	}
	return moved;
}

/* ------------------------------------------------------------------------
 * the active subgraph of one batch (host memory; graph.c uploads it) */

typedef struct gactive {
	int64_t M;          /* positions */
	int64_t nA;         /* active nodes */
	int64_t nE;         /* active edges */
	int32_t *node;      /* [nA] global node id of local node */
	int32_t *pos_node;  /* [M] local node of position m */
	int32_t *pptr;      /* [M+1] identity (one entry per position) */
	float *ones;        /* [M] 1 */
	float *pinv;        /* [M] 1 / count(node of m) */
	int32_t *nptr;      /* [nA+1] positions of node, CSR */
	int32_t *npos;      /* [M] */
	float *ninv;        /* [M] 1 / count(node) per entry */
	/* edges, CSR by target: entry k: src esrc[k] -> dst edst[k] */
	int32_t *eptr;      /* [nA+1] */
	int32_t *esrc, *edst, *eid;  /* [nE] local src, local dst, list slot */
	float *ew;          /* [nE] sign / indeg(dst) */
	float *escale;      /* [nE] 1 / indeg(dst) */
	/* CSR by source (transposed aggregation) */
	int32_t *tptr;      /* [nA+1] */
	int32_t *tdst;      /* [nE] */
	float *tw;          /* [nE] */
	int64_t capM, capA, capE;
} gactive;

static void gactive_free(gactive *a)
{
	free(a->node); free(a->pos_node); free(a->pptr); free(a->ones);
	free(a->pinv); free(a->nptr); free(a->npos); free(a->ninv);
	free(a->eptr); free(a->esrc); free(a->edst); free(a->eid); free(a->ew);
	free(a->escale); free(a->tptr); free(a->tdst); free(a->tw);
	memset(a, 0, sizeof *a);
}

static int gactive_reserve(gactive *a, int64_t M, int64_t nA, int64_t nE)
{
#define GROW(p, n) do { \
		void *q_ = realloc((p), (size_t)((n) > 0 ? (n) : 1) * sizeof *(p)); \
		if (!q_) \
			return -1; \
		(p) = q_; \
	} while (0)
	if (M > a->capM) {
		M = M > 2 * a->capM ? M : 2 * a->capM;
		GROW(a->pos_node, M); GROW(a->pptr, M + 1); GROW(a->ones, M);
		GROW(a->pinv, M); GROW(a->npos, M); GROW(a->ninv, M);
		a->capM = M;
	}
	if (nA > a->capA) {
		nA = nA > 2 * a->capA ? nA : 2 * a->capA;
		GROW(a->node, nA); GROW(a->nptr, nA + 1); GROW(a->eptr, nA + 1);
		GROW(a->tptr, nA + 1);
		a->capA = nA;
	}
	if (nE > a->capE) {
		nE = nE > 2 * a->capE ? nE : 2 * a->capE;
		GROW(a->esrc, nE); GROW(a->edst, nE); GROW(a->eid, nE);
		GROW(a->ew, nE); GROW(a->escale, nE); GROW(a->tdst, nE);
		GROW(a->tw, nE);
		a->capE = nE;
	}
#undef GROW
	return 0;
}

/* Build from codes[M] (host; all in [0, nodes), checked by the caller) and
 * the edge list. Local node ids: batch codes in order of first appearance,
 * then neighbours in edge-slot order. Returns 0, or -1 out of memory. */
static int gactive_build(gactive *a, const int32_t *codes, int64_t M,
			 const gedges *e)
{
	ghash h;
	int64_t bound = M + 2 * e->n;
	if (ghash_init(&h, bound < 16 ? 16 : bound)) return -1;
	int64_t nA = 0;
	if (gactive_reserve(a, M, M, 0)) goto oom;
	a->M = M;
	for (int64_t m = 0; m < M; m++) {
		int64_t s = ghash_slot(&h, codes[m]);
		if (h.val[s] < 0) {
			h.key[s] = codes[m];
			h.val[s] = (int32_t)nA;
			a->node[nA++] = codes[m];
		}
		a->pos_node[m] = h.val[s];
	}
	int64_t nBatch = nA;
	/* neighbours: the other end of any edge touching a batch code */
	for (int64_t i = 0; i < e->n; i++) {
		int32_t ls = ghash_get(&h, e->src[i]), ld = ghash_get(&h, e->dst[i]);
		int32_t other = -1;
		if (ls >= 0 && ls < nBatch && ld < 0) other = e->dst[i];
		else if (ld >= 0 && ld < nBatch && ls < 0) other = e->src[i];
		if (other < 0) continue;
		if (gactive_reserve(a, M, nA + 1, 0)) goto oom;
		ghash_put(&h, other, (int32_t)nA);
		a->node[nA++] = other;
	}
	a->nA = nA;
	/* active edges: both ends active */
	int64_t nE = 0;
	for (int64_t i = 0; i < e->n; i++)
		nE += ghash_get(&h, e->src[i]) >= 0 && ghash_get(&h, e->dst[i]) >= 0;
	if (gactive_reserve(a, M, nA, nE)) goto oom;
	a->nE = nE;
	/* CSR by target (counting sort, stable in slot order) */
	for (int64_t v = 0; v <= nA; v++) a->eptr[v] = 0, a->tptr[v] = 0;
	for (int64_t i = 0; i < e->n; i++) {
		int32_t ls = ghash_get(&h, e->src[i]), ld = ghash_get(&h, e->dst[i]);
		if (ls < 0 || ld < 0) continue;
		a->eptr[ld + 1]++;
		a->tptr[ls + 1]++;
	}
	for (int64_t v = 0; v < nA; v++) {
		a->eptr[v + 1] += a->eptr[v];
		a->tptr[v + 1] += a->tptr[v];
	}
	int32_t *fill = a->nptr; /* scratch: reused below */
	for (int64_t v = 0; v < nA; v++) fill[v] = a->eptr[v];
	for (int64_t i = 0; i < e->n; i++) {
		int32_t ls = ghash_get(&h, e->src[i]), ld = ghash_get(&h, e->dst[i]);
		if (ls < 0 || ld < 0) continue;
		int32_t k = fill[ld]++;
		float inv = 1.0f / (float)(a->eptr[ld + 1] - a->eptr[ld]);
		a->esrc[k] = ls;
		a->edst[k] = ld;
		a->eid[k] = (int32_t)i;
		a->escale[k] = inv;
		a->ew[k] = (float)e->sign[i] * inv;
	}
	/* transpose: entries by source, in target-CSR order */
	for (int64_t v = 0; v < nA; v++) fill[v] = a->tptr[v];
	for (int64_t k = 0; k < nE; k++) {
		int32_t t = fill[a->esrc[k]]++;
		a->tdst[t] = a->edst[k];
		a->tw[t] = a->ew[k];
	}
	/* positions: identity CSR and node -> positions CSR */
	for (int64_t v = 0; v <= nA; v++) a->nptr[v] = 0;
	for (int64_t m = 0; m < M; m++) a->nptr[a->pos_node[m] + 1]++;
	for (int64_t v = 0; v < nA; v++) a->nptr[v + 1] += a->nptr[v];
	int32_t *f2 = a->pptr; /* scratch before the identity fill */
	for (int64_t v = 0; v < nA && v < M; v++) f2[v] = a->nptr[v];
	for (int64_t m = 0; m < M; m++) {
		int32_t v = a->pos_node[m];
		int32_t c = a->nptr[v + 1] - a->nptr[v];
		a->npos[f2[v]++] = (int32_t)m;
		a->pinv[m] = 1.0f / (float)c;
		a->ones[m] = 1.0f;
	}
	for (int64_t m = 0; m < M; m++) a->ninv[m] = a->pinv[a->npos[m]];
	for (int64_t m = 0; m <= M; m++) a->pptr[m] = (int32_t)m;
	ghash_free(&h);
	return 0;
oom:
	ghash_free(&h);
	return -1;
}

#endif /* GRAPH_CORE_H */
