/*
 * bench/bench_moe.cu -- steady-state timing of the `moe` plugin
 * (SharedProjectionMoE) on the CUDA backend: forward + backward (sign votes)
 * + the ternary step of every tensor it created, timed with CUDA events on
 * the default stream (where the backend and the plugin run).
 *
 *   ./build/bench/bench_moe [path/to/moe.so]   (default build/plugins/moe.so
 *                                               or $ARB_BENCH_BUILD/plugins)
 * Shapes (bench/moe_torch.py runs the same in PyTorch bf16 and prints the
 * same line format, for a side-by-side comparison in one session):
 *   small: B=2  L=8   D=512  E=8  k=2 r=16 F=4D  (dense path; ARBS REFACTOR7
 *          seed: 3.6 ms dense steady state, target 10x faster = 0.36 ms)
 *   small, sparse path forced (dense_dispatch_max_tokens = 0)
 *   large: B=32 L=512 D=1024 E=16 k=2 r=16 F=4D  (grouped sparse path)
 * then a dense ternary SwiGLU FFN (F = 4D) on the small and large tokens:
 * the peer of equal active width inside arbcore (line prefix "ffn").
 * Output: one line per shape,
 *   moe impl=arbcore shape=... first_ms=... fwd_ms=... bwd_ms=... upd_ms=...
 *   total_ms=... (median of N steady-state iterations)
 */
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <vector>
#include "arb/harness.h"

#define CUDA_OK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, \
		cudaGetErrorString(e_)); exit(1); } } while (0)

static const arb_plugin *load_plugin(const char *path)
{
	void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		fprintf(stderr, "bench_moe: cannot load %s: %s\n", path, dlerror());
		exit(1);
	}
	arb_plugin_descriptor_fn fn =
		(arb_plugin_descriptor_fn)dlsym(dl, ARB_PLUGIN_SYMBOL);
	if (!fn) {
		fprintf(stderr, "bench_moe: %s has no descriptor\n", path);
		exit(1);
	}
	return fn();
}

static float median(std::vector<float> v)
{
	std::sort(v.begin(), v.end());
	return v[v.size() / 2];
}

/* ---------------------------------------------------------------------------
 * the common harness of both measurements: the test host of arb/harness.h
 * (tensors start with T_accum uniform in [-4, 4]), random x and dy, sign
 * votes and the ternary step of every tensor the host created */
typedef struct bench_run {
	arb_backend *be;
	arb_harness *H;
	int B, T, D;
	size_t n;                 /* B * T * D */
	float *x, *y, *dy, *dx;
	arb_vote v;
	arb_step sp;
} bench_run;

typedef void (*bench_phase)(bench_run *r, void *ctx);

static void run_open(bench_run *r, arb_backend *be, int B, int T, int D)
{
	memset(r, 0, sizeof *r);
	r->be = be;
	r->B = B;
	r->T = T;
	r->D = D;
	r->H = (arb_harness *)calloc(1, sizeof *r->H);
	arb_model_info mi;
	memset(&mi, 0, sizeof mi);
	mi.d_model = D;
	mi.n_layers = 1;
	mi.n_heads = 8;
	mi.ctx = T;
	mi.batch = B;
	mi.group_size = 32;
	mi.seed = 7;
	arb_harness_init(r->H, be, &mi);
	r->H->accum_init = 4;
	r->n = (size_t)B * T * D;
	std::vector<float> hx(r->n), hdy(r->n);
	uint64_t z = 99;
	for (size_t i = 0; i < r->n; i++) {
		z = arb_mix64(z);
		hx[i] = (float)((z >> 40) / 16777216.0) * 2.0f - 1.0f;
		hdy[i] = (float)(((z >> 8) & 0xffff) / 65536.0 - 0.5) * 1e-3f;
	}
	r->x = (float *)be->alloc(be, r->n * 4);
	r->y = (float *)be->alloc(be, r->n * 4);
	r->dy = (float *)be->alloc(be, r->n * 4);
	r->dx = (float *)be->alloc(be, r->n * 4);
	be->upload(be, r->x, hx.data(), r->n * 4);
	be->upload(be, r->dy, hdy.data(), r->n * 4);
	r->v.kind = ARB_VOTE_SIGN;
	r->v.step = 1;
	r->v.sr_R = 1;
	r->v.seed = 7;
	r->sp.threshold = 8;
	r->sp.reset_mode = ARB_RESET_ZERO;
	r->sp.order = ARB_ORDER_E_FIRST;
	r->sp.e_threshold = 64;
	r->sp.e_min = -30;
	r->sp.e_max = 10;
	r->sp.seed = 7;
}

static void run_close(bench_run *r)
{
	float *bufs[] = { r->x, r->y, r->dy, r->dx };
	for (float *p : bufs) r->be->free(r->be, p);
	arb_harness_free(r->H); /* destroy(self) of a plugin, the tensors */
	free(r->H);
}

/* ARB_BENCH_QUEUED=1: a 2 ms spin kernel before each phase, so that the host
 * has queued the phase's work before the GPU reaches it; each phase's event
 * time is then the GPU's own time for it, without the gaps of host-side
 * launch cost (a phase that waits for the device inside still waits) */
__global__ void spin_kernel(unsigned long long ns)
{
	unsigned long long t0, t;
	asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
	do {
		asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
	} while (t - t0 < ns);
}
static int g_queued = -1;
static void maybe_spin(void)
{
	if (g_queued < 0) g_queued = getenv("ARB_BENCH_QUEUED") != NULL;
	if (g_queued) spin_kernel<<<1, 1>>>(2000000ull);
}

/* iters + 1 steps of forward, backward, step; the first is reported alone,
 * the medians of the others: ms[0] first, fwd, bwd, update, total */
static void run_time(bench_run *r, bench_phase fwd, bench_phase bwd, void *ctx,
		     int iters, float ms[5])
{
	/* events: start and end of each phase (the same event time as before
	 * when there is no spin in between) */
	cudaEvent_t ev[6];
	for (int i = 0; i < 6; i++) CUDA_OK(cudaEventCreate(&ev[i]));
	std::vector<float> t[4];
	ms[0] = 0.0f;
	for (int it = 0; it <= iters; it++) {
		r->v.t = r->sp.t = (uint64_t)it;
		r->be->zero(r->be, r->dx, r->n * 4);
		maybe_spin();
		CUDA_OK(cudaEventRecord(ev[0], 0));
		fwd(r, ctx);
		CUDA_OK(cudaEventRecord(ev[1], 0));
		maybe_spin();
		CUDA_OK(cudaEventRecord(ev[2], 0));
		bwd(r, ctx);
		CUDA_OK(cudaEventRecord(ev[3], 0));
		maybe_spin();
		CUDA_OK(cudaEventRecord(ev[4], 0));
		arb_harness_step(r->H, &r->sp, NULL);
		CUDA_OK(cudaEventRecord(ev[5], 0));
		CUDA_OK(cudaEventSynchronize(ev[5]));
		float e[4];
		for (int j = 0; j < 3; j++)
			CUDA_OK(cudaEventElapsedTime(&e[j], ev[2 * j], ev[2 * j + 1]));
		e[3] = e[0] + e[1] + e[2];
		if (it == 0) {
			ms[0] = e[3];
			continue;
		}
		for (int j = 0; j < 4; j++) t[j].push_back(e[j]);
	}
	for (int j = 0; j < 4; j++) ms[1 + j] = median(t[j]);
	for (int i = 0; i < 6; i++) cudaEventDestroy(ev[i]);
}

/* ---------------------------------------------------------------------------
 * the moe plugin */
typedef struct moe_ctx {
	const arb_plugin *pl;
	arb_io io;
} moe_ctx;

static void moe_fwd(bench_run *r, void *c)
{
	moe_ctx *m = (moe_ctx *)c;
	arb_error err;
	memset(&err, 0, sizeof err);
	if (m->pl->forward(r->H->self, &m->io, &err)) {
		fprintf(stderr, "bench_moe: forward: %s\n", err.msg);
		exit(1);
	}
}

static void moe_bwd(bench_run *r, void *c)
{
	moe_ctx *m = (moe_ctx *)c;
	arb_error err;
	memset(&err, 0, sizeof err);
	m->io.vote = &r->v;
	if (m->pl->backward(r->H->self, &m->io, &err)) {
		fprintf(stderr, "bench_moe: backward: %s\n", err.msg);
		exit(1);
	}
}

static void bench_shape(const arb_plugin *pl, arb_backend *be, const char *label,
			int B, int T, int D, int E, int k, int r, int64_t dense,
			int iters)
{
	bench_run R;
	run_open(&R, be, B, T, D);
	arb_harness *H = R.H;
	arb_harness_use(H, pl);
	arb_error err;
	memset(&err, 0, sizeof err);
	if (arb_harness_setf(H, "experts", &err, "%d", E) ||
	    arb_harness_setf(H, "top_k", &err, "%d", k) ||
	    arb_harness_setf(H, "rank", &err, "%d", r) ||
	    arb_harness_set(H, "hidden", "0", &err) ||
	    arb_harness_setf(H, "dense_dispatch_max_tokens", &err, "%lld",
			     (long long)dense) ||
	    arb_harness_set(H, "balance", "0.01", &err) ||
	    arb_harness_set(H, "layers", "0", &err) ||
	    arb_harness_create(H, "moe", &err)) {
		fprintf(stderr, "bench_moe: create: %s\n", err.msg);
		exit(1);
	}
	moe_ctx m;
	memset(&m, 0, sizeof m);
	m.pl = pl;
	m.io.struct_size = sizeof m.io;
	m.io.be = be;
	m.io.B = B;
	m.io.T = T;
	m.io.D = D;
	m.io.layer = 0;
	m.io.training = 1;
	m.io.x = R.x;
	m.io.y = R.y;
	m.io.dy = R.dy;
	m.io.dx = R.dx;
	float ms[5];
	run_time(&R, moe_fwd, moe_bwd, &m, iters, ms);
	int64_t M = (int64_t)B * T;
	printf("moe impl=arbcore shape=%s B=%d L=%d D=%d E=%d k=%d r=%d F=%d "
	       "path=%s first_ms=%.3f fwd_ms=%.3f bwd_ms=%.3f upd_ms=%.3f "
	       "total_ms=%.3f iters=%d\n", label, B, T, D, E, k, r, 4 * D,
	       M <= dense ? "dense" : "sparse", ms[0], ms[1], ms[2], ms[3],
	       ms[4], iters);
	fflush(stdout);
	run_close(&R);
}

/* ---------------------------------------------------------------------------
 * The peer of equal active width inside arbcore: a dense ternary SwiGLU FFN
 * (gate, up: F x D; down: D x F; F = 4D, the moe's shared width) built from
 * the backend's ops, on the same tokens and with the same timing. */
typedef struct ffn_ctx {
	arb_tern *wg, *wu, *wd;
	int64_t M, nf;            /* rows, M * F */
	float *a, *b, *h, *dh, *da, *db;
} ffn_ctx;

static void ffn_fwd(bench_run *r, void *c)
{
	ffn_ctx *f = (ffn_ctx *)c;
	arb_backend *be = r->be;
	be->linear_forward(be, f->wg, r->x, f->a, f->M, 0);
	be->linear_forward(be, f->wu, r->x, f->b, f->M, 0);
	be->swiglu_forward(be, f->a, f->b, f->h, f->nf);
	be->linear_forward(be, f->wd, f->h, r->y, f->M, 0);
}

static void ffn_bwd(bench_run *r, void *c)
{
	ffn_ctx *f = (ffn_ctx *)c;
	arb_backend *be = r->be;
	be->linear_backward_x(be, f->wd, r->dy, f->dh, f->M, 0);
	be->linear_vote(be, f->wd, f->h, r->dy, f->M, &r->v);
	be->swiglu_backward(be, f->a, f->b, f->dh, f->da, f->db, f->nf);
	be->linear_backward_x(be, f->wg, f->da, r->dx, f->M, 0);
	be->linear_backward_x(be, f->wu, f->db, r->dx, f->M, 1);
	be->linear_vote(be, f->wg, r->x, f->da, f->M, &r->v);
	be->linear_vote(be, f->wu, r->x, f->db, f->M, &r->v);
}

static void bench_dense_ffn(arb_backend *be, const char *label, int B, int T,
			    int D, int iters)
{
	int F = 4 * D;
	bench_run R;
	run_open(&R, be, B, T, D);
	const arb_host *h = &R.H->host;
	arb_error err;
	memset(&err, 0, sizeof err);
	ffn_ctx f;
	memset(&f, 0, sizeof f);
	if (h->tern_create(h, "ffn", "gate", F, D, NULL, &f.wg, &err) ||
	    h->tern_create(h, "ffn", "up", F, D, NULL, &f.wu, &err) ||
	    h->tern_create(h, "ffn", "down", D, F, NULL, &f.wd, &err)) {
		fprintf(stderr, "bench_moe: dense ffn: %s\n", err.msg);
		exit(1);
	}
	f.M = (int64_t)B * T;
	f.nf = f.M * F;
	float **bufs[] = { &f.a, &f.b, &f.h, &f.dh, &f.da, &f.db };
	for (float **p : bufs) *p = (float *)be->alloc(be, (size_t)f.nf * 4);
	float ms[5];
	run_time(&R, ffn_fwd, ffn_bwd, &f, iters, ms);
	printf("ffn impl=arbcore-dense-ternary shape=%s B=%d L=%d D=%d F=%d "
	       "first_ms=%.3f fwd_ms=%.3f bwd_ms=%.3f upd_ms=%.3f total_ms=%.3f "
	       "iters=%d\n", label, B, T, D, F, ms[0], ms[1], ms[2], ms[3],
	       ms[4], iters);
	fflush(stdout);
	for (float **p : bufs) be->free(be, *p);
	run_close(&R);
}

int main(int argc, char **argv)
{
	char def[4096];
	const char *bd = getenv("ARB_BENCH_BUILD");
	snprintf(def, sizeof def, "%s/plugins/moe.so", bd ? bd : "build");
	const char *path = argc > 1 ? argv[1] : def;
	const arb_plugin *pl = load_plugin(path);
	arb_error err;
	memset(&err, 0, sizeof err);
	arb_backend *be = arb_backend_cuda(&err);
	if (!be) {
		fprintf(stderr, "bench_moe: no CUDA backend: %s\n", err.msg);
		return 1;
	}
	printf("# ARBS REFACTOR7 seed: B=2 L=8 D=512 dense steady state 3.6 ms "
	       "(fwd+bwd); target 0.36 ms\n");
	/* ARB_BENCH_ONLY=small: the small shapes only (for a profiler run) */
	const char *only = getenv("ARB_BENCH_ONLY");
	int large = !only || strcmp(only, "small") != 0;
	bench_shape(pl, be, "small", 2, 8, 512, 8, 2, 16, 128, 200);
	bench_shape(pl, be, "small-sparse", 2, 8, 512, 8, 2, 16, 0, 200);
	if (large) bench_shape(pl, be, "large", 32, 512, 1024, 16, 2, 16, 128, 20);
	/* dense ternary SwiGLU of the moe's shared width F = 4D (its active
	 * width without the rank-r expert deltas) on the same tokens */
	bench_dense_ffn(be, "small", 2, 8, 512, 200);
	if (large) bench_dense_ffn(be, "large", 32, 512, 1024, 20);
	return 0;
}
