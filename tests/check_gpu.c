/*
 * tests/check_gpu.c -- the CUDA backend against the CPU reference, op by op.
 *
 * Integer state (trits, E, T_accum, E_accum, corr, score, steps, rms_log2,
 * step stats) must be exactly equal after several vote + step rounds; the
 * inputs are dyadic (k/16, |k| <= 16: at most four significant bits) so
 * every value is exact in bf16 and fp8 e4m3, every partial sum in fp32, and
 * every vote has the same sign on both backends. Float outputs:
 *   linear fwd / bwd on dyadic inputs: exact up to 1e-6 relative;
 *   linear fwd / bwd on uniform floats: bf16 operands, ||gpu-cpu||/||cpu|| < 1e-2;
 *   everything else (fp32 on both sides): |d| <= 1e-5 + 1e-4 |cpu|
 *   (attention 1e-4 + 1e-3, different summation order and expf).
 * Every case carries the tag "gpu" (skipped without a device).
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "arb/ops.h"
#include "testutil.h"

static arb_backend *cpu, *gpu;

static void setup(void)
{
	arb_error err = { 0 };
	cpu = arb_backend_cpu();
	gpu = arb_backend_cuda(&err);
	ck_assert_msg(gpu != NULL, "cuda backend: %s", err.msg);
}

/* ---------------------------------------------------------------------------
 * helpers */
static void *dup_to_gpu(const void *h, size_t bytes)
{
	void *d = gpu->alloc(gpu, bytes);
	gpu->upload(gpu, d, h, bytes);
	return d;
}
static float *fetch_f(const float *d, size_t n)
{
	float *h = malloc(n * sizeof *h);
	gpu->download(gpu, h, d, n * sizeof *h);
	return h;
}

typedef struct pair { arb_tern h, d; } pair;

static void pair_make(pair *p, int64_t rows, int64_t cols, int gs, int erule,
		      uint32_t flags, uint32_t id, int accum_init, int const_trit)
{
	arb_error err = { 0 };
	arb_tern *ts[2] = { &p->h, &p->d };
	arb_backend *bs[2] = { cpu, gpu };
	arb_tern_init ini = { .seed = 1234 + id, .zero_frac = 1.0 / 3.0,
			      .const_trit = const_trit, .e_init = -3,
			      .accum_init = accum_init };
	for (int i = 0; i < 2; i++) {
		arb_tern *t = ts[i];
		memset(t, 0, sizeof *t);
		snprintf(t->name, sizeof t->name, "t%u", id);
		t->rows = rows;
		t->cols = cols;
		t->group_size = gs;
		t->flags = flags;
		t->erule = erule;
		t->id = id;
		t->bigint_alpha = 0.5f;
		ck_assert_int_eq(bs[i]->tern_alloc(bs[i], t, &err), ARB_OK);
		bs[i]->tern_init(bs[i], t, &ini);
	}
}
static void pair_free(pair *p)
{
	cpu->tern_free(cpu, &p->h);
	gpu->tern_free(gpu, &p->d);
}

static void cmp_bytes(const char *what, const void *h, const void *d, size_t n)
{
	if (!h && !d) return;
	ck_assert_msg(h && d, "%s: present on one backend only", what);
	unsigned char *g = malloc(n ? n : 1);
	gpu->download(gpu, g, d, n);
	size_t bad = 0, first = 0;
	for (size_t i = 0; i < n; i++)
		if (g[i] != ((const unsigned char *)h)[i]) { if (!bad) first = i; bad++; }
	free(g);
	ck_assert_msg(bad == 0, "%s: %zu of %zu bytes differ (first at byte %zu)", what,
		      bad, n, first);
}
static void pair_check(const pair *p, const char *ctx)
{
	char lbl[160];
	const arb_tern *h = &p->h, *d = &p->d;
	int64_t ng = h->rows * (int64_t)h->groups;
#define CMP(f, n) do { snprintf(lbl, sizeof lbl, "%s: %s", ctx, #f); \
	cmp_bytes(lbl, h->f, d->f, (size_t)(n)); } while (0)
	CMP(packed, h->rows * h->row_bytes);
	CMP(E, ng);
	CMP(T_accum, h->T_accum ? h->rows * h->cols : 0);
	CMP(E_accum, ng);
	CMP(corr, ng * 8);
	CMP(score, ng * 4);
#undef CMP
	ck_assert_msg(h->steps == d->steps, "%s: steps", ctx);
	ck_assert_msg(h->rms_log2 == d->rms_log2, "%s: rms_log2 cpu %d gpu %d", ctx,
		      h->rms_log2, d->rms_log2);
}

/* ---------------------------------------------------------------------------
 * init */
START_TEST(test_init)
{
	static const struct { int64_t r, c; int gs, erule, acc, ct; } cs[] = {
		{ 45, 133, 4, ARB_ERULE_RESIDUAL, 5, 0 },
		{ 1, 1, 12, ARB_ERULE_BIGINT, 3, 0 },
		{ 300, 257, 32, ARB_ERULE_FROZEN, 0, 0 },
		{ 7, 64, 64, ARB_ERULE_RESIDUAL, 127, 0 },
		{ 3, 99, 32, ARB_ERULE_FROZEN, 0, 1 },
	};
	for (unsigned i = 0; i < sizeof cs / sizeof cs[0]; i++) {
		pair p;
		pair_make(&p, cs[i].r, cs[i].c, cs[i].gs, cs[i].erule, 0, 10 + i,
			  cs[i].acc, cs[i].ct);
		pair_check(&p, "init");
		pair_free(&p);
	}
}
END_TEST

/* ---------------------------------------------------------------------------
 * linear forward / backward */
static void run_linear(int64_t M, int64_t N, int64_t K, int gs, int erule, int dyadic)
{
	char ctx[128];
	snprintf(ctx, sizeof ctx, "linear M=%lld N=%lld K=%lld gs=%d erule=%d %s",
		 (long long)M, (long long)N, (long long)K, gs, erule,
		 dyadic ? "dyadic" : "float");
	pair p;
	pair_make(&p, N, K, gs, erule, 0, 77, 0, 0);
	if (erule == ARB_ERULE_BIGINT) {
		/* non-trivial bigint scales: corr != 0, steps = 3 */
		int64_t ng = N * (int64_t)p.h.groups;
		for (int64_t g = 0; g < ng; g++) p.h.corr[g] = (g % 7) - 3;
		p.h.steps = p.d.steps = 3;
		gpu->upload(gpu, p.d.corr, p.h.corr, (size_t)ng * 8);
	}
	float *x = malloc((size_t)(M * K) * 4), *dy = malloc((size_t)(M * N) * 4);
	float *y = malloc((size_t)(M * N) * 4), *dx = malloc((size_t)(M * K) * 4);
	if (dyadic) {
		arb_test_fill_dyadic(x, (size_t)(M * K), 1);
		arb_test_fill_dyadic(dy, (size_t)(M * N), 2);
	} else {
		arb_test_fill(x, (size_t)(M * K), 1);
		arb_test_fill(dy, (size_t)(M * N), 2);
	}
	float *dX = dup_to_gpu(x, (size_t)(M * K) * 4), *dDY = dup_to_gpu(dy, (size_t)(M * N) * 4);
	float *dY = gpu->alloc(gpu, (size_t)(M * N) * 4), *dDX = gpu->alloc(gpu, (size_t)(M * K) * 4);
	for (int acc = 0; acc < 2; acc++) {
		if (!acc) {
			/* poison: every element must be written */
			for (int64_t i = 0; i < M * N; i++) y[i] = NAN;
			for (int64_t i = 0; i < M * K; i++) dx[i] = NAN;
			gpu->upload(gpu, dY, y, (size_t)(M * N) * 4);
			gpu->upload(gpu, dDX, dx, (size_t)(M * K) * 4);
		}
		cpu->linear_forward(cpu, &p.h, x, y, M, acc);
		gpu->linear_forward(gpu, &p.d, dX, dY, M, acc);
		cpu->linear_backward_x(cpu, &p.h, dy, dx, M, acc);
		gpu->linear_backward_x(gpu, &p.d, dDY, dDX, M, acc);
		float *gy = fetch_f(dY, (size_t)(M * N)), *gx = fetch_f(dDX, (size_t)(M * K));
		if (dyadic && erule != ARB_ERULE_BIGINT) {
			ck_assert_msg(arb_test_close(ctx, gy, y, (size_t)(M * N), 1e-6f, 1e-6f) == 0,
				      "%s: forward (acc=%d)", ctx, acc);
			ck_assert_msg(arb_test_close(ctx, gx, dx, (size_t)(M * K), 1e-6f, 1e-6f) == 0,
				      "%s: backward_x (acc=%d)", ctx, acc);
		} else {
			double ny = 0, ey = 0, nx = 0, ex = 0;
			for (int64_t i = 0; i < M * N; i++) {
				ny += (double)y[i] * y[i];
				ey += ((double)gy[i] - y[i]) * ((double)gy[i] - y[i]);
			}
			for (int64_t i = 0; i < M * K; i++) {
				nx += (double)dx[i] * dx[i];
				ex += ((double)gx[i] - dx[i]) * ((double)gx[i] - dx[i]);
			}
			ck_assert_msg(sqrt(ey) <= 1e-2 * sqrt(ny) && isfinite(ey),
				      "%s: forward rel err %g", ctx, sqrt(ey / ny));
			ck_assert_msg(sqrt(ex) <= 1e-2 * sqrt(nx) && isfinite(ex),
				      "%s: backward_x rel err %g", ctx, sqrt(ex / nx));
		}
		free(gy);
		free(gx);
	}
	gpu->free(gpu, dX); gpu->free(gpu, dDY); gpu->free(gpu, dY); gpu->free(gpu, dDX);
	free(x); free(dy); free(y); free(dx);
	pair_free(&p);
}

START_TEST(test_linear_small)
{
	static const int gss[] = { 4, 12, 32, 64 };
	for (int g = 0; g < 4; g++) {
		run_linear(37, 45, 133, gss[g], ARB_ERULE_RESIDUAL, 1);
		run_linear(1, 45, 133, gss[g], ARB_ERULE_FROZEN, 1);
		run_linear(16, 200, 333, gss[g], ARB_ERULE_FROZEN, 1);
		run_linear(5, 45, 133, gss[g], ARB_ERULE_FROZEN, 0);
	}
	run_linear(9, 130, 1000, 32, ARB_ERULE_BIGINT, 1);
	run_linear(37, 45, 133, 12, ARB_ERULE_BIGINT, 0);
	/* 16 < M < 64: the skinny kernels 16 rows at a time; backward_x split
	 * over many row chunks (N = 3001: the last chunk partial) */
	run_linear(17, 300, 1000, 32, ARB_ERULE_RESIDUAL, 1);
	run_linear(40, 3001, 77, 12, ARB_ERULE_FROZEN, 1);
	run_linear(63, 513, 260, 4, ARB_ERULE_BIGINT, 1);
	run_linear(33, 1000, 700, 64, ARB_ERULE_RESIDUAL, 0);
	run_linear(2, 5000, 641, 16, ARB_ERULE_RESIDUAL, 1);
	/* next to the one-token GEMV: 3 and 4 tokens (the skinny kernel), and
	 * one token with several 16-byte chunks per lane and row and a row
	 * length not divisible by 16 bytes */
	run_linear(3, 300, 1000, 32, ARB_ERULE_RESIDUAL, 1);
	run_linear(4, 130, 333, 64, ARB_ERULE_FROZEN, 0);
	run_linear(1, 70, 11003, 32, ARB_ERULE_FROZEN, 1);
	/* 64 <= M <= 256 with a tile grid too small for the GPU: skinny in
	 * chunks of 16 (forward where the group size allows, backward_x) */
	run_linear(128, 2048, 128, 32, ARB_ERULE_RESIDUAL, 1);
	run_linear(200, 130, 260, 12, ARB_ERULE_BIGINT, 0);
	run_linear(77, 300, 1000, 64, ARB_ERULE_FROZEN, 0);
	/* the skinny forward over 16-token chunks (grid.z) with split-K */
	run_linear(250, 700, 900, 32, ARB_ERULE_RESIDUAL, 1);
	run_linear(100, 1000, 333, 16, ARB_ERULE_FROZEN, 0);
	/* the v3 kernel: 256-row CTAs (four 16-token chunks, the last of 10;
	 * tiles x chunks x k-blocks fill two CTAs an SM) and 5 tokens on long
	 * rows (128-row CTAs, K split 11 ways); odd row bytes (705, 1401: every
	 * byte offset of the aligned words), a last k-block of one byte, rows
	 * past N in the last tile */
	run_linear(58, 1400, 3521, 32, ARB_ERULE_RESIDUAL, 1);
	run_linear(5, 3100, 7001, 16, ARB_ERULE_FROZEN, 1);
}
END_TEST

/* the v4 skinny forward (M <= 16) in every warp arrangement it has (forced
 * by ARB_SK4, also where the dispatch would take another kernel), with
 * and without split-K: rows 4-byte aligned (K = 1000, 4095, 4100: row bytes
 * 200, 819, 820) or not, group sizes 16..128, 1, 8 and 9..16 tokens, row
 * counts that leave the last CTA partial */
START_TEST(test_linear_skinny4)
{
	static const char *cfg[] = { "1,1,1", "1,1,2", "1,2,3", "2,1,2", "2,2,1", "2,2,4" };
	for (unsigned c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
		setenv("ARB_SK4", cfg[c], 1);
		run_linear(1, 100, 4100, 32, ARB_ERULE_FROZEN, 1);
		run_linear(8, 333, 1000, 128, ARB_ERULE_RESIDUAL, 1);
		run_linear(12, 70, 4095, 16, ARB_ERULE_FROZEN, 1);
		run_linear(16, 130, 2003, 64, ARB_ERULE_FROZEN, 0);
	}
	unsetenv("ARB_SK4");
	/* the default choices: 16-row CTAs in one wave, 32-row CTAs beyond */
	run_linear(2, 2000, 4096, 32, ARB_ERULE_FROZEN, 1);
	run_linear(4, 6000, 4096, 32, ARB_ERULE_RESIDUAL, 1);
	/* the kernels it replaced, still the fallback (ARB_CUDA_LEGACY=fwd16):
	 * the GEMV (one token) and the v3 skinny kernel; one token also past
	 * the table kernel (lut) */
	setenv("ARB_CUDA_LEGACY", "fwd16,lut", 1);
	run_linear(1, 70, 11003, 32, ARB_ERULE_FROZEN, 1);
	run_linear(3, 300, 1000, 32, ARB_ERULE_RESIDUAL, 1);
	run_linear(16, 200, 333, 64, ARB_ERULE_FROZEN, 0);
	unsetenv("ARB_CUDA_LEGACY");
}
END_TEST

/* the v5 skinny kernel (1..8 tokens, the CTA's weight copies all in flight
 * before it decodes): forced shapes ARB_SK5 = "wr,splits" (16- or 32-row
 * CTAs, K split 1..5 ways; 1 and 5..8 tokens only when forced), rows 4-byte
 * aligned (K = 4100: 820 bytes) or not (K = 1001, 2003, 11003), group sizes
 * 16, 32, 64 and 128, row counts that leave the last tile partial, K too
 * short for every warp to have a segment; then its own choice of shape */
START_TEST(test_linear_sk5)
{
	static const char *cfg[] = { "1,1", "1,3", "2,1", "2,2", "2,5" };
	for (unsigned c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
		setenv("ARB_SK5", cfg[c], 1);
		run_linear(1, 100, 4100, 32, ARB_ERULE_FROZEN, 1);
		run_linear(3, 333, 1001, 16, ARB_ERULE_RESIDUAL, 1);
		run_linear(8, 70, 2003, 128, ARB_ERULE_FROZEN, 1);
		run_linear(5, 130, 11003, 64, ARB_ERULE_FROZEN, 0);
		run_linear(4, 40, 150, 16, ARB_ERULE_FROZEN, 1);
	}
	unsetenv("ARB_SK5");
	/* its own shape where it runs by default (2..4 tokens, rows over 64
	 * segments: K > 5120): K split for SMs, and (K = 100000 on 135 row
	 * tiles: x alone would take 200 KB at two splits) for shared memory */
	run_linear(2, 300, 40000, 16, ARB_ERULE_FROZEN, 1);
	run_linear(4, 2000, 11008, 32, ARB_ERULE_RESIDUAL, 1);
	run_linear(3, 100, 6000, 64, ARB_ERULE_FROZEN, 0);
	run_linear(2, 4300, 100000, 32, ARB_ERULE_FROZEN, 1);
}
END_TEST

/* the one-token table kernel (ARB_LUT=1 forces it where the v4 skinny
 * kernel would take the shape): rows 4-byte aligned (K = 4100: 820 bytes)
 * or not (K = 1001, 2003, 11003), group sizes 16 (16-weight units), 32, 64
 * and 128 (32-weight units, a group's scale over several), one slice
 * (K <= 160: no split) or many, row counts that leave the last CTA
 * partial; unforced on more rows than the v4 kernel fills in one wave;
 * ARB_CUDA_LEGACY=lut gives the v4 skinny kernel its one-token work back */
START_TEST(test_linear_lut)
{
	setenv("ARB_LUT", "1", 1);
	run_linear(1, 700, 4100, 32, ARB_ERULE_FROZEN, 1);
	run_linear(1, 333, 1001, 16, ARB_ERULE_RESIDUAL, 1);
	run_linear(1, 100, 150, 64, ARB_ERULE_FROZEN, 1);
	run_linear(1, 513, 2003, 128, ARB_ERULE_FROZEN, 0);
	run_linear(1, 1030, 11003, 16, ARB_ERULE_FROZEN, 0);
	unsetenv("ARB_LUT");
	run_linear(1, 5000, 1000, 32, ARB_ERULE_RESIDUAL, 1);
	run_linear(1, 6000, 333, 64, ARB_ERULE_FROZEN, 0);
	setenv("ARB_CUDA_LEGACY", "lut", 1);
	run_linear(1, 5000, 1000, 32, ARB_ERULE_RESIDUAL, 1);
	unsetenv("ARB_CUDA_LEGACY");
}
END_TEST

START_TEST(test_linear_large)
{
	run_linear(512, 256, 400, 32, ARB_ERULE_RESIDUAL, 1);
	run_linear(512, 256, 400, 12, ARB_ERULE_FROZEN, 1);
	run_linear(300, 200, 640, 64, ARB_ERULE_FROZEN, 0);
	/* K and N not multiples of 8: the bf16 workspaces' zero padding and a
	 * partial last k-stage */
	run_linear(512, 250, 333, 32, ARB_ERULE_RESIDUAL, 1);
	run_linear(384, 250, 333, 16, ARB_ERULE_FROZEN, 0);
	/* the store GEMM without its producer warp, the decode and conversion
	 * in two launches (ARB_CUDA_LEGACY=wspec,prep) */
	setenv("ARB_CUDA_LEGACY", "wspec,prep", 1);
	run_linear(512, 250, 333, 32, ARB_ERULE_RESIDUAL, 1);
	run_linear(300, 200, 640, 64, ARB_ERULE_FROZEN, 0);
	/* single CTAs instead of CTA pairs sharing B (ARB_CUDA_LEGACY=wcl;
	 * above, 300 tokens are an odd number of row tiles: the last pair's
	 * second CTA has no rows) */
	setenv("ARB_CUDA_LEGACY", "wcl", 1);
	run_linear(512, 250, 333, 32, ARB_ERULE_RESIDUAL, 1);
	run_linear(300, 200, 640, 64, ARB_ERULE_FROZEN, 0);
	unsetenv("ARB_CUDA_LEGACY");
	/* tile grids of few tiles: K split 3 (forward) and 4 ways (backward_x)
	 * into partial sums (300 x 200 x 640 above: the forward 2 ways), on
	 * pairs and on single CTAs, and not split (ARB_CUDA_LEGACY=wsk) */
	run_linear(256, 1024, 768, 32, ARB_ERULE_RESIDUAL, 1);
	setenv("ARB_CUDA_LEGACY", "wcl", 1);
	run_linear(256, 1024, 768, 32, ARB_ERULE_RESIDUAL, 1);
	setenv("ARB_CUDA_LEGACY", "wsk", 1);
	run_linear(256, 1024, 768, 32, ARB_ERULE_RESIDUAL, 1);
	unsetenv("ARB_CUDA_LEGACY");
}
END_TEST

/* ---------------------------------------------------------------------------
 * votes + steps: integer state exact */
static void cmp_stats(const char *ctx, const arb_step_stats *a, const arb_step_stats *b)
{
	ck_assert_msg(a->flips == b->flips && a->candidates == b->candidates &&
		      a->saturated == b->saturated && a->capped == b->capped &&
		      a->e_changes == b->e_changes && a->zeros == b->zeros,
		      "%s: stats cpu f%lld c%lld s%lld k%lld e%lld z%lld gpu f%lld c%lld "
		      "s%lld k%lld e%lld z%lld", ctx,
		      (long long)a->flips, (long long)a->candidates, (long long)a->saturated,
		      (long long)a->capped, (long long)a->e_changes, (long long)a->zeros,
		      (long long)b->flips, (long long)b->candidates, (long long)b->saturated,
		      (long long)b->capped, (long long)b->e_changes, (long long)b->zeros);
}

/* round r's inputs times g_amp[r] (powers of two; NULL: 1) */
static const float *g_amp;

static void run_vote(int64_t M, int64_t N, int64_t K, int gs, int erule, int kind,
		     int reset, int order, int64_t cap_ppm, int rounds)
{
	char ctx[200];
	pair p;
	pair_make(&p, N, K, gs, erule, 0, 5, 2, 0);
	float *x = malloc((size_t)(M * K) * 4), *dy = malloc((size_t)(M * N) * 4);
	float *dX = gpu->alloc(gpu, (size_t)(M * K) * 4), *dDY = gpu->alloc(gpu, (size_t)(M * N) * 4);
	for (int r = 0; r < rounds; r++) {
		snprintf(ctx, sizeof ctx,
			 "vote M=%lld N=%lld K=%lld gs=%d erule=%d kind=%d reset=%d order=%d cap=%lld round %d",
			 (long long)M, (long long)N, (long long)K, gs, erule, kind, reset, order,
			 (long long)cap_ppm, r);
		arb_test_fill_dyadic(x, (size_t)(M * K), 100 + r);
		arb_test_fill_dyadic(dy, (size_t)(M * N), 200 + r);
		if (g_amp) {
			for (int64_t i = 0; i < M * K; i++) x[i] *= g_amp[r];
			for (int64_t i = 0; i < M * N; i++) dy[i] *= g_amp[r];
		}
		gpu->upload(gpu, dX, x, (size_t)(M * K) * 4);
		gpu->upload(gpu, dDY, dy, (size_t)(M * N) * 4);
		arb_vote v = { .kind = kind, .step = 1 + r % 2, .sr_R = 2, .seed = 99, .t = (uint64_t)r };
		cpu->linear_vote(cpu, &p.h, x, dy, M, &v);
		gpu->linear_vote(gpu, &p.d, dX, dDY, M, &v);
		if (r == 0) {
			/* a second call in the same step (shared weights) */
			cpu->linear_vote(cpu, &p.h, x, dy, M, &v);
			gpu->linear_vote(gpu, &p.d, dX, dDY, M, &v);
		}
		arb_step sp = { .threshold = 3, .reset_mode = reset, .order = order,
				.e_threshold = 2, .e_min = -8, .e_max = 2,
				.cap_ppm = cap_ppm, .seed = 7, .t = (uint64_t)r };
		/* score before the step is integer state too */
		pair_check(&p, ctx);
		arb_step_stats sa, sb;
		cpu->tern_step(cpu, &p.h, &sp, &sa);
		gpu->tern_step(gpu, &p.d, &sp, &sb);
		cmp_stats(ctx, &sa, &sb);
		pair_check(&p, ctx);
		if (r == rounds - 1)
			ck_assert_msg(sa.flips > 0, "%s: test inputs produce no flips", ctx);
	}
	gpu->free(gpu, dX); gpu->free(gpu, dDY);
	free(x); free(dy);
	pair_free(&p);
}

START_TEST(test_vote_small)
{
	static const int gss[] = { 4, 12, 32, 64 };
	for (int g = 0; g < 4; g++) {
		int erule = g % 2 ? ARB_ERULE_BIGINT : ARB_ERULE_RESIDUAL;
		run_vote(37, 45, 133, gss[g], erule, ARB_VOTE_SIGN, g % 2, (g / 2) % 2, 0, 4);
		run_vote(37, 45, 133, gss[g], ARB_ERULE_RESIDUAL, ARB_VOTE_SR, (g + 1) % 2,
			 g % 2, 0, 4);
	}
	run_vote(1, 45, 133, 12, ARB_ERULE_FROZEN, ARB_VOTE_SIGN, 0, 0, 0, 3);
	/* sign votes over several 128 x 128 tiles, K not a multiple of 4 */
	run_vote(16, 300, 517, 12, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN, 0, 1, 0, 3);
	run_vote(100, 130, 1001, 4, ARB_ERULE_BIGINT, ARB_VOTE_SIGN, 1, 0, 0, 3);
	run_vote(70, 257, 383, 64, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN, 1, 1, 30000, 3);
	run_vote(37, 45, 133, 4, ARB_ERULE_BIGINT, ARB_VOTE_SR, 1, 1, 0, 3);
	/* flip cap: 2% of the weights per step */
	run_vote(37, 45, 133, 32, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN, 0, 1, 20000, 4);
	run_vote(37, 45, 133, 12, ARB_ERULE_BIGINT, ARB_VOTE_SR, 1, 0, 20000, 4);
}
END_TEST

/* the legacy kernels (ARB_CUDA_LEGACY=gemm,skinny: the one-pass tile GEMM
 * that loads and converts its operands itself) give the same state */
START_TEST(test_vote_legacy)
{
	setenv("ARB_CUDA_LEGACY", "gemm,skinny", 1);
	run_vote(100, 130, 1001, 4, ARB_ERULE_BIGINT, ARB_VOTE_SIGN, 1, 0, 0, 3);
	run_vote(16, 300, 517, 32, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN, 0, 1, 0, 2);
	run_vote(37, 45, 133, 12, ARB_ERULE_RESIDUAL, ARB_VOTE_SR, 0, 0, 0, 2);
	run_linear(100, 130, 260, 32, ARB_ERULE_RESIDUAL, 1);
	run_linear(16, 200, 333, 12, ARB_ERULE_FROZEN, 1);
	unsetenv("ARB_CUDA_LEGACY");
}
END_TEST

/* ARB_CUDA_LEGACY=bwdx: the fp32 CUDA-core skinny backward_x for the
 * shapes that now take the tensor-core one */
START_TEST(test_bwdx_legacy)
{
	setenv("ARB_CUDA_LEGACY", "bwdx", 1);
	run_linear(37, 45, 133, 12, ARB_ERULE_RESIDUAL, 1);
	run_linear(40, 3001, 77, 4, ARB_ERULE_FROZEN, 1);
	run_linear(128, 2048, 128, 32, ARB_ERULE_RESIDUAL, 0);
	unsetenv("ARB_CUDA_LEGACY");
}
END_TEST

START_TEST(test_vote_large)
{
	run_vote(512, 256, 400, 32, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN, 1, 1, 0, 3);
	run_vote(512, 256, 400, 12, ARB_ERULE_BIGINT, ARB_VOTE_SR, 0, 0, 5000, 3);
	/* the direct small-M vote over several CTAs in both directions, M above
	 * one staging chunk (32) and M = 1 */
	run_vote(32, 300, 700, 12, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN, 0, 1, 0, 3);
	run_vote(45, 131, 259, 4, ARB_ERULE_BIGINT, ARB_VOTE_SIGN, 1, 0, 0, 3);
	run_vote(1, 129, 1000, 64, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN, 0, 0, 0, 3);
	/* a dW too big for the direct kernel: the tile GEMM (K % 4 == 0: the
	 * SIMD byte update), and the same with the per-weight loop
	 * (ARB_CUDA_LEGACY=vsimd) */
	run_vote(512, 600, 500, 32, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN, 1, 0, 0, 2);
	run_vote(300, 640, 1000, 16, ARB_ERULE_BIGINT, ARB_VOTE_SIGN, 0, 1, 20000, 3);
	/* K % 16 == 0: on Hopper the producer warp prefetches T_accum and the
	 * packed windows (rows and columns past the matrix in the last tiles),
	 * and the same without the prefetch (ARB_CUDA_LEGACY=vpf) */
	run_vote(300, 333, 800, 12, ARB_ERULE_BIGINT, ARB_VOTE_SIGN, 1, 1, 20000, 3);
	run_vote(260, 130, 272, 4, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN, 0, 0, 0, 2);
	setenv("ARB_CUDA_LEGACY", "vpf", 1);
	run_vote(300, 333, 800, 12, ARB_ERULE_BIGINT, ARB_VOTE_SIGN, 1, 1, 20000, 3);
	setenv("ARB_CUDA_LEGACY", "vsimd", 1);
	run_vote(300, 640, 1000, 16, ARB_ERULE_BIGINT, ARB_VOTE_SIGN, 0, 1, 20000, 3);
	unsetenv("ARB_CUDA_LEGACY");
}
END_TEST

/* the sign vote on fp8 operands (Hopper, M >= 256), whose scale comes from
 * the last vote's |max|: the first vote (no last one: pass 1 redoes every
 * tile), a second call of the same step (the last scale fits), |max| twice
 * and a quarter of the last (the stale scale kept, dyadic values still
 * exact), 1024 times (values past 448: redone) and 2^-12 times (below 1/16
 * of the last: redone) -- every state exactly the CPU's; then the bf16
 * operands (ARB_CUDA_LEGACY=vf8) on the same shapes */
START_TEST(test_vote_f8)
{
	static const float amp[5] = { 1.0f, 2.0f, 0.25f, 1024.0f, 1.0f / 4096.0f };
	g_amp = amp;
	run_vote(300, 333, 800, 12, ARB_ERULE_BIGINT, ARB_VOTE_SIGN, 1, 1, 20000, 5);
	run_vote(512, 600, 500, 32, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN, 0, 0, 0, 5);
	g_amp = NULL;
	setenv("ARB_CUDA_LEGACY", "vf8", 1);
	run_vote(300, 333, 800, 12, ARB_ERULE_BIGINT, ARB_VOTE_SIGN, 1, 1, 20000, 3);
	run_vote(512, 600, 500, 32, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN, 0, 0, 0, 2);
	unsetenv("ARB_CUDA_LEGACY");
}
END_TEST

/* ARB_CUDA_LEGACY=vote: the bf16 tile GEMM path for the shapes that now take
 * the direct kernel */
START_TEST(test_vote_tile)
{
	setenv("ARB_CUDA_LEGACY", "vote", 1);
	run_vote(16, 300, 517, 12, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN, 0, 1, 0, 3);
	run_vote(100, 130, 1001, 4, ARB_ERULE_BIGINT, ARB_VOTE_SIGN, 1, 0, 0, 3);
	run_vote(70, 257, 383, 64, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN, 1, 1, 30000, 3);
	run_vote(37, 45, 133, 32, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN, 0, 1, 20000, 3);
	unsetenv("ARB_CUDA_LEGACY");
}
END_TEST

/* tern_step_many: one batch on the GPU (one device wait) against the CPU
 * reference stepping the same tensors one by one: every tensor's state and
 * stats exactly equal, frozen and bigint included */
typedef struct step_case { int64_t r, c; int gs, erule; uint32_t fl; int64_t cap; } step_case;

static void run_step_many(const step_case *cs, int nt)
{
	pair *ps = calloc((size_t)nt, sizeof *ps);
	arb_tern **wd = calloc((size_t)nt, sizeof *wd);
	arb_step *sp = calloc((size_t)nt, sizeof *sp);
	arb_step_stats *sa = calloc((size_t)nt, sizeof *sa), *sb = calloc((size_t)nt, sizeof *sb);
	for (int i = 0; i < nt; i++) {
		pair_make(&ps[i], cs[i].r, cs[i].c, cs[i].gs, cs[i].erule, cs[i].fl,
			  40 + i, cs[i].fl ? 0 : 2, 0);
		wd[i] = &ps[i].d;
	}
	const int64_t M = 19;
	for (int r = 0; r < 3; r++) {
		for (int i = 0; i < nt; i++) {
			if (cs[i].fl) continue;
			int64_t N = cs[i].r, K = cs[i].c;
			float *x = malloc((size_t)(M * K) * 4), *dy = malloc((size_t)(M * N) * 4);
			arb_test_fill_dyadic(x, (size_t)(M * K), 300 + r * 10 + i);
			arb_test_fill_dyadic(dy, (size_t)(M * N), 400 + r * 10 + i);
			float *dX = dup_to_gpu(x, (size_t)(M * K) * 4);
			float *dDY = dup_to_gpu(dy, (size_t)(M * N) * 4);
			arb_vote v = { .kind = i % 4 == 1 ? ARB_VOTE_SR : ARB_VOTE_SIGN, .step = 1,
				       .sr_R = 2, .seed = 99, .t = (uint64_t)r };
			cpu->linear_vote(cpu, &ps[i].h, x, dy, M, &v);
			gpu->linear_vote(gpu, &ps[i].d, dX, dDY, M, &v);
			gpu->free(gpu, dX);
			gpu->free(gpu, dDY);
			free(x);
			free(dy);
		}
		for (int i = 0; i < nt; i++)
			sp[i] = (arb_step){ .threshold = 2 + i % 2, .reset_mode = i % 2,
					    .order = (i / 2) % 2, .e_threshold = 2, .e_min = -8,
					    .e_max = 2, .cap_ppm = cs[i].cap, .seed = 7,
					    .t = (uint64_t)r };
		for (int i = 0; i < nt; i++) cpu->tern_step(cpu, &ps[i].h, &sp[i], &sa[i]);
		gpu->tern_step_many(gpu, wd, sp, nt, sb);
		int64_t flips = 0;
		for (int i = 0; i < nt; i++) {
			char ctx[96];
			snprintf(ctx, sizeof ctx, "step_many round %d tensor %d", r, i);
			cmp_stats(ctx, &sa[i], &sb[i]);
			pair_check(&ps[i], ctx);
			flips += sa[i].flips;
		}
		ck_assert_msg(flips > 0, "round %d: test inputs produce no flips", r);
	}
	for (int i = 0; i < nt; i++) pair_free(&ps[i]);
	free(ps); free(wd); free(sp); free(sa); free(sb);
}

START_TEST(test_step_many)
{
	static const step_case cs[] = {
		{ 45, 133, 4, ARB_ERULE_RESIDUAL, 0, 0 },
		{ 200, 320, 32, ARB_ERULE_RESIDUAL, 0, 0 },
		{ 20, 33, 4, ARB_ERULE_FROZEN, ARB_TERN_FROZEN, 0 },
		{ 64, 100, 12, ARB_ERULE_BIGINT, 0, 0 },
		{ 7, 64, 64, ARB_ERULE_RESIDUAL, 0, 30000 },
	};
	run_step_many(cs, 5);
}
END_TEST

/* more tensors than one row-batched launch holds (16), rows wider than its
 * shared group counters (3 x 8200 at group 4: 2050 groups a row, own
 * kernels), single-row blocks (a row of 2100 packed bytes), several rows per
 * block with both orders, and every tensor through the per-tensor kernels
 * (ARB_CUDA_LEGACY=step) */
START_TEST(test_step_batch)
{
	step_case cs[21];
	for (int i = 0; i < 21; i++) {
		static const int gss[] = { 4, 12, 32, 64, 5 };
		cs[i] = (step_case){ 3 + 7 * i, 17 + 31 * i, gss[i % 5],
				     i % 3 == 2 ? ARB_ERULE_BIGINT : ARB_ERULE_RESIDUAL, 0, 0 };
	}
	cs[6] = (step_case){ 3, 8200, 4, ARB_ERULE_RESIDUAL, 0, 0 };
	cs[9] = (step_case){ 5, 10500, 64, ARB_ERULE_RESIDUAL, 0, 0 };
	cs[12] = (step_case){ 33, 140, 12, ARB_ERULE_FROZEN, ARB_TERN_FROZEN, 0 };
	run_step_many(cs, 21);
	setenv("ARB_CUDA_LEGACY", "step", 1);
	run_step_many(cs, 21);
	run_vote(37, 45, 133, 12, ARB_ERULE_BIGINT, ARB_VOTE_SIGN, 1, 1, 0, 3);
	unsetenv("ARB_CUDA_LEGACY");
}
END_TEST

/* the uncapped step where many weights are at threshold (|T| up to 20 at
 * threshold 12, then 8: about 40 % and more): the fast kernel's path for
 * lanes with many weights at threshold; several group sizes, both reset
 * modes and both orders, two rounds, exact against the CPU */
START_TEST(test_step_heavy)
{
	static const struct { int64_t r, c; int gs, erule, reset, order; } cs[] = {
		{ 64, 1280, 32, ARB_ERULE_RESIDUAL, 0, ARB_ORDER_T_FIRST },
		{ 33, 640, 16, ARB_ERULE_BIGINT, 1, ARB_ORDER_E_FIRST },
		{ 20, 4100, 4, ARB_ERULE_RESIDUAL, 1, ARB_ORDER_T_FIRST },
		{ 9, 1280, 128, ARB_ERULE_RESIDUAL, 0, ARB_ORDER_E_FIRST },
		{ 17, 335, 64, ARB_ERULE_BIGINT, 0, ARB_ORDER_T_FIRST },
	};
	for (int leg = 0; leg < 2; leg++) {
		/* then the same through the per-tensor kernels of
		 * ARB_CUDA_LEGACY=step */
		if (leg) setenv("ARB_CUDA_LEGACY", "step", 1);
		for (int i = 0; i < (int)(sizeof cs / sizeof cs[0]); i++) {
			pair p;
			pair_make(&p, cs[i].r, cs[i].c, cs[i].gs, cs[i].erule, 0, 60 + i, 20, 0);
			for (int r = 0; r < 2; r++) {
				char ctx[120];
				snprintf(ctx, sizeof ctx, "step_heavy %lldx%lld gs=%d legacy=%d round %d",
					 (long long)cs[i].r, (long long)cs[i].c, cs[i].gs, leg, r);
				arb_step sp = { .threshold = 12 - 4 * r, .reset_mode = cs[i].reset,
						.order = cs[i].order, .e_threshold = 2, .e_min = -8,
						.e_max = 2, .cap_ppm = 0, .seed = 7, .t = (uint64_t)r };
				arb_step_stats sa, sb;
				cpu->tern_step(cpu, &p.h, &sp, &sa);
				gpu->tern_step(gpu, &p.d, &sp, &sb);
				cmp_stats(ctx, &sa, &sb);
				pair_check(&p, ctx);
				ck_assert_msg(sa.flips > 0 && sa.saturated > 0,
					      "%s: inputs produce no flips or no held weights", ctx);
			}
			pair_free(&p);
		}
	}
	unsetenv("ARB_CUDA_LEGACY");
}
END_TEST

START_TEST(test_step_frozen)
{
	pair p;
	pair_make(&p, 20, 33, 4, ARB_ERULE_FROZEN, ARB_TERN_FROZEN, 3, 0, 0);
	arb_step sp = { .threshold = 3, .e_threshold = 2, .e_min = -8, .e_max = 2 };
	arb_step_stats sa, sb;
	cpu->tern_step(cpu, &p.h, &sp, &sa);
	gpu->tern_step(gpu, &p.d, &sp, &sb);
	cmp_stats("frozen step", &sa, &sb);
	ck_assert(sa.zeros > 0);
	pair_free(&p);
}
END_TEST

/* ---------------------------------------------------------------------------
 * table */
static void run_embed(int64_t V, int64_t D, int gs, int erule, int kind)
{
	char ctx[128];
	snprintf(ctx, sizeof ctx, "embed V=%lld D=%lld gs=%d erule=%d kind=%d",
		 (long long)V, (long long)D, gs, erule, kind);
	pair p;
	pair_make(&p, V, D, gs, erule, ARB_TERN_SPARSE, 9, 1, 0);
	const int64_t n = 97;
	int32_t *idx = malloc((size_t)n * 4);
	float *dout = malloc((size_t)(n * D) * 4), *out = malloc((size_t)(n * D) * 4);
	int32_t *dI = gpu->alloc(gpu, (size_t)n * 4);
	float *dD = gpu->alloc(gpu, (size_t)(n * D) * 4), *dO = gpu->alloc(gpu, (size_t)(n * D) * 4);
	for (int r = 0; r < 3; r++) {
		for (int64_t i = 0; i < n; i++) idx[i] = (int32_t)((i * 7 + r * 3) % (V / 2)); /* duplicates */
		arb_test_fill_dyadic(dout, (size_t)(n * D), 300 + r);
		gpu->upload(gpu, dI, idx, (size_t)n * 4);
		gpu->upload(gpu, dD, dout, (size_t)(n * D) * 4);
		cpu->embed_forward(cpu, &p.h, idx, n, out, 0);
		gpu->embed_forward(gpu, &p.d, dI, n, dO, 0);
		float *g = fetch_f(dO, (size_t)(n * D));
		ck_assert_msg(arb_test_close(ctx, g, out, (size_t)(n * D), 1e-6f, 1e-6f) == 0,
			      "%s: embed_forward", ctx);
		free(g);
		arb_vote v = { .kind = kind, .step = 2, .sr_R = 3, .seed = 5, .t = (uint64_t)r };
		cpu->embed_vote(cpu, &p.h, idx, n, dout, &v);
		gpu->embed_vote(gpu, &p.d, dI, n, dD, &v);
		pair_check(&p, ctx);
		arb_step sp = { .threshold = 2, .reset_mode = ARB_RESET_REMAINDER,
				.order = ARB_ORDER_T_FIRST, .e_threshold = 1, .e_min = -8,
				.e_max = 2, .seed = 7, .t = (uint64_t)r };
		arb_step_stats sa, sb;
		cpu->tern_step(cpu, &p.h, &sp, &sa);
		gpu->tern_step(gpu, &p.d, &sp, &sb);
		cmp_stats(ctx, &sa, &sb);
		pair_check(&p, ctx);
	}
	gpu->free(gpu, dI); gpu->free(gpu, dD); gpu->free(gpu, dO);
	free(idx); free(dout); free(out);
	pair_free(&p);
}

START_TEST(test_embed)
{
	run_embed(50, 45, 4, ARB_ERULE_RESIDUAL, ARB_VOTE_SIGN);
	run_embed(50, 45, 12, ARB_ERULE_BIGINT, ARB_VOTE_SR);
	run_embed(300, 64, 32, ARB_ERULE_RESIDUAL, ARB_VOTE_SR);
	run_embed(40, 133, 64, ARB_ERULE_FROZEN, ARB_VOTE_SIGN);
}
END_TEST

/* ---------------------------------------------------------------------------
 * float ops */
static void check_f(const char *what, const float *dptr, const float *ref, size_t n,
		    float atol, float rtol)
{
	float *g = fetch_f(dptr, n);
	ck_assert_msg(arb_test_close(what, g, ref, n, atol, rtol) == 0, "%s differs", what);
	free(g);
}

START_TEST(test_rmsnorm)
{
	const int64_t M = 37, D = 133;
	float *x = malloc(M * D * 4), *dy = malloc(M * D * 4), *y = malloc(M * D * 4),
	      *rs = malloc(M * 4), *dx = malloc(M * D * 4);
	arb_test_fill(x, M * D, 11);
	arb_test_fill(dy, M * D, 12);
	float *dX = dup_to_gpu(x, M * D * 4), *dDY = dup_to_gpu(dy, M * D * 4);
	float *dYo = gpu->alloc(gpu, M * D * 4), *dR = gpu->alloc(gpu, M * 4),
	      *dDX = gpu->alloc(gpu, M * D * 4);
	for (int gcase = 0; gcase < 2; gcase++) {
		pair p;
		arb_tern *gh = NULL, *gd = NULL;
		if (gcase) {
			pair_make(&p, 1, D, 12, ARB_ERULE_FROZEN, ARB_TERN_FROZEN, 21, 0, 0);
			gh = &p.h;
			gd = &p.d;
		}
		for (int acc = 0; acc < 2; acc++) {
			cpu->rmsnorm_forward(cpu, gh, x, y, rs, M, D);
			gpu->rmsnorm_forward(gpu, gd, dX, dYo, dR, M, D);
			check_f("rmsnorm y", dYo, y, M * D, 1e-5f, 1e-4f);
			check_f("rmsnorm rstd", dR, rs, M, 1e-5f, 1e-4f);
			cpu->rmsnorm_backward(cpu, gh, x, rs, dy, dx, M, D, acc);
			gpu->rmsnorm_backward(gpu, gd, dX, dR, dDY, dDX, M, D, acc);
			check_f("rmsnorm dx", dDX, dx, M * D, 1e-5f, 1e-4f);
		}
		if (gcase) pair_free(&p);
	}
	gpu->free(gpu, dX); gpu->free(gpu, dDY); gpu->free(gpu, dYo); gpu->free(gpu, dR);
	gpu->free(gpu, dDX);
	free(x); free(dy); free(y); free(rs); free(dx);
}
END_TEST

static void run_attention(int B, int T, int H, int hd)
{
	size_t n = (size_t)B * T * H * hd, nl = (size_t)B * H * T;
	float *q = malloc(n * 4), *k = malloc(n * 4), *v = malloc(n * 4), *o = malloc(n * 4),
	      *l = malloc(nl * 4), *dout = malloc(n * 4), *dq = malloc(n * 4),
	      *dk = malloc(n * 4), *dv = malloc(n * 4);
	arb_test_fill(q, n, 31);
	arb_test_fill(k, n, 32);
	arb_test_fill(v, n, 33);
	arb_test_fill(dout, n, 34);
	for (size_t i = 0; i < n; i++) { q[i] *= 3.0f; k[i] *= 3.0f; }
	float *dQ = dup_to_gpu(q, n * 4), *dK = dup_to_gpu(k, n * 4), *dV = dup_to_gpu(v, n * 4),
	      *dDO = dup_to_gpu(dout, n * 4);
	float *dO = gpu->alloc(gpu, n * 4), *dL = gpu->alloc(gpu, nl * 4),
	      *gq = gpu->alloc(gpu, n * 4), *gk = gpu->alloc(gpu, n * 4), *gv = gpu->alloc(gpu, n * 4);
	cpu->attention_forward(cpu, q, k, v, o, l, B, T, H, hd);
	gpu->attention_forward(gpu, dQ, dK, dV, dO, dL, B, T, H, hd);
	check_f("attention out", dO, o, n, 1e-4f, 1e-3f);
	check_f("attention lse", dL, l, nl, 1e-4f, 1e-3f);
	cpu->attention_backward(cpu, q, k, v, o, l, dout, dq, dk, dv, B, T, H, hd);
	gpu->attention_backward(gpu, dQ, dK, dV, dO, dL, dDO, gq, gk, gv, B, T, H, hd);
	check_f("attention dq", gq, dq, n, 1e-4f, 1e-3f);
	check_f("attention dk", gk, dk, n, 1e-4f, 1e-3f);
	check_f("attention dv", gv, dv, n, 1e-4f, 1e-3f);
	void *ds[] = { dQ, dK, dV, dDO, dO, dL, gq, gk, gv };
	for (unsigned i = 0; i < 9; i++) gpu->free(gpu, ds[i]);
	free(q); free(k); free(v); free(o); free(l); free(dout); free(dq); free(dk); free(dv);
}

START_TEST(test_attention)
{
	run_attention(2, 37, 3, 16);
	run_attention(1, 70, 2, 128);
	run_attention(2, 1, 1, 8);
}
END_TEST

START_TEST(test_elementwise)
{
	const int64_t n = 10007, M = 37, D = 45, P = 8, V = 1000, CM = 19;
	float *a = malloc(n * 4), *b = malloc(n * 4), *o = malloc(n * 4),
	      *da = malloc(n * 4), *db = malloc(n * 4);
	arb_test_fill(a, n, 41);
	arb_test_fill(b, n, 42);
	for (int64_t i = 0; i < n; i++) a[i] *= 6.0f;
	float *dA = dup_to_gpu(a, n * 4), *dB = dup_to_gpu(b, n * 4);
	float *dO = gpu->alloc(gpu, n * 4), *gA = gpu->alloc(gpu, n * 4), *gB = gpu->alloc(gpu, n * 4);
	cpu->swiglu_forward(cpu, a, b, o, n);
	gpu->swiglu_forward(gpu, dA, dB, dO, n);
	check_f("swiglu out", dO, o, n, 1e-5f, 1e-4f);
	cpu->swiglu_backward(cpu, a, b, o, da, db, n);
	gpu->swiglu_backward(gpu, dA, dB, dO, gA, gB, n);
	check_f("swiglu da", gA, da, n, 1e-5f, 1e-4f);
	check_f("swiglu db", gB, db, n, 1e-5f, 1e-4f);
	/* axpy */
	cpu->axpy(cpu, b, a, -0.75f, n);
	gpu->axpy(gpu, dB, dA, -0.75f, n);
	check_f("axpy", dB, b, n, 1e-6f, 1e-6f);
	/* add_rows */
	cpu->add_rows(cpu, b, a, M, P, D, 0.5f);
	gpu->add_rows(gpu, dB, dA, M, P, D, 0.5f);
	check_f("add_rows", dB, b, n, 1e-6f, 1e-6f);
	/* sum: deterministic, equal to the CPU's to double rounding */
	double sc = cpu->sum(cpu, a, n), sg = gpu->sum(gpu, dA, n), sg2 = gpu->sum(gpu, dA, n);
	ck_assert_msg(fabs(sc - sg) <= 1e-9 * (1 + fabs(sc)), "sum cpu %.17g gpu %.17g", sc, sg);
	ck_assert_msg(sg == sg2, "sum not deterministic");
	/* all_finite */
	ck_assert_int_eq(gpu->all_finite(gpu, dA, n), 1);
	float nanv = NAN;
	gpu->upload(gpu, dA + 5000, &nanv, 4);
	ck_assert_int_eq(gpu->all_finite(gpu, dA, n), 0);
	float infv = INFINITY;
	gpu->upload(gpu, dA + n - 1, &infv, 4);
	gpu->upload(gpu, dA + 5000, a + 5000, 4);
	ck_assert_int_eq(gpu->all_finite(gpu, dA, n), 0);
	/* cross-entropy with ignored targets */
	float *lg = malloc(CM * V * 4), *loss = malloc(CM * 4), *dl = malloc(CM * V * 4);
	int32_t tg[19];
	arb_test_fill(lg, CM * V, 43);
	for (int64_t i = 0; i < CM * V; i++) lg[i] *= 8.0f;
	for (int i = 0; i < CM; i++) tg[i] = i % 5 == 4 ? -1 : (i * 131) % (int)V;
	float *dLG = dup_to_gpu(lg, CM * V * 4), *dLoss = gpu->alloc(gpu, CM * 4),
	      *dDL = gpu->alloc(gpu, CM * V * 4);
	int32_t *dT = dup_to_gpu(tg, sizeof tg);
	cpu->cross_entropy(cpu, lg, tg, CM, V, loss, dl, 0.25f);
	gpu->cross_entropy(gpu, dLG, dT, CM, V, dLoss, dDL, 0.25f);
	check_f("ce loss", dLoss, loss, CM, 1e-5f, 1e-4f);
	check_f("ce dlogits", dDL, dl, CM * V, 1e-6f, 1e-4f);
	gpu->cross_entropy(gpu, dLG, dT, CM, V, dLoss, NULL, 1.0f);
	check_f("ce loss (no grad)", dLoss, loss, CM, 1e-5f, 1e-4f);
	void *ds[] = { dA, dB, dO, gA, gB, dLG, dLoss, dDL, dT };
	for (unsigned i = 0; i < 9; i++) gpu->free(gpu, ds[i]);
	free(a); free(b); free(o); free(da); free(db); free(lg); free(loss); free(dl);
}
END_TEST

START_TEST(test_memory)
{
	/* alloc zeroes; copy/zero/download round trip */
	unsigned char h[1000], g[1000];
	for (int i = 0; i < 1000; i++) h[i] = (unsigned char)(i * 7);
	unsigned char *a = gpu->alloc(gpu, 1000), *b = gpu->alloc(gpu, 1000);
	gpu->download(gpu, g, a, 1000);
	for (int i = 0; i < 1000; i++) ck_assert_int_eq(g[i], 0);
	gpu->upload(gpu, a, h, 1000);
	gpu->copy(gpu, b, a, 1000);
	gpu->zero(gpu, b + 10, 20);
	gpu->sync(gpu);
	gpu->download(gpu, g, b, 1000);
	for (int i = 0; i < 1000; i++) ck_assert_int_eq(g[i], (i >= 10 && i < 30) ? 0 : h[i]);
	gpu->free(gpu, a);
	gpu->free(gpu, b);
}
END_TEST

Suite *suite_gpu(void)
{
	Suite *s = suite_create("gpu");
	struct { const char *name; const TTest *t; } cases[] = {
		{ "memory", test_memory },
		{ "init", test_init },
		{ "linear_small", test_linear_small },
		{ "linear_skinny4", test_linear_skinny4 },
		{ "linear_lut", test_linear_lut },
		{ "linear_sk5", test_linear_sk5 },
		{ "linear_large", test_linear_large },
		{ "vote_small", test_vote_small },
		{ "vote_large", test_vote_large },
		{ "vote_legacy", test_vote_legacy },
		{ "bwdx_legacy", test_bwdx_legacy },
		{ "vote_tile", test_vote_tile },
		{ "vote_f8", test_vote_f8 },
		{ "step_frozen", test_step_frozen },
		{ "step_heavy", test_step_heavy },
		{ "step_many", test_step_many },
		{ "step_batch", test_step_batch },
		{ "embed", test_embed },
		{ "rmsnorm", test_rmsnorm },
		{ "attention", test_attention },
		{ "elementwise", test_elementwise },
	};
	for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		TCase *tc = tcase_create(cases[i].name);
		tcase_set_tags(tc, "gpu");
		tcase_set_timeout(tc, 300);
		tcase_add_checked_fixture(tc, setup, NULL);
		tcase_add_test(tc, cases[i].t);
		suite_add_tcase(s, tc);
	}
	return s;
}
