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

static void bench_shape(const arb_plugin *pl, arb_backend *be, const char *label,
			int B, int T, int D, int E, int k, int r, int64_t dense,
			int iters)
{
	/* the test host of arb/harness.h; tensors start with T_accum uniform in
	 * [-4, 4] */
	arb_harness *H = (arb_harness *)calloc(1, sizeof *H);
	arb_model_info mi;
	memset(&mi, 0, sizeof mi);
	mi.d_model = D;
	mi.n_layers = 1;
	mi.n_heads = 8;
	mi.ctx = T;
	mi.batch = B;
	mi.group_size = 32;
	mi.seed = 7;
	arb_harness_init(H, be, &mi);
	H->accum_init = 4;
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
	void *self = H->self;
	size_t n = (size_t)B * T * D;
	std::vector<float> hx(n), hdy(n);
	uint64_t z = 99;
	for (size_t i = 0; i < n; i++) {
		z = arb_mix64(z);
		hx[i] = (float)((z >> 40) / 16777216.0) * 2.0f - 1.0f;
		hdy[i] = (float)(((z >> 8) & 0xffff) / 65536.0 - 0.5) * 1e-3f;
	}
	float *x = (float *)be->alloc(be, n * 4), *y = (float *)be->alloc(be, n * 4);
	float *dy = (float *)be->alloc(be, n * 4), *dx = (float *)be->alloc(be, n * 4);
	be->upload(be, x, hx.data(), n * 4);
	be->upload(be, dy, hdy.data(), n * 4);

	arb_io io;
	memset(&io, 0, sizeof io);
	io.struct_size = sizeof io;
	io.be = be;
	io.B = B;
	io.T = T;
	io.D = D;
	io.layer = 0;
	io.training = 1;
	io.x = x;
	io.y = y;
	io.dy = dy;
	io.dx = dx;
	arb_vote v;
	memset(&v, 0, sizeof v);
	v.kind = ARB_VOTE_SIGN;
	v.step = 1;
	v.sr_R = 1;
	v.seed = 7;
	arb_step sp;
	memset(&sp, 0, sizeof sp);
	sp.threshold = 8;
	sp.reset_mode = ARB_RESET_ZERO;
	sp.order = ARB_ORDER_E_FIRST;
	sp.e_threshold = 64;
	sp.e_min = -30;
	sp.e_max = 10;
	sp.seed = 7;

	cudaEvent_t ev[4];
	for (int i = 0; i < 4; i++) CUDA_OK(cudaEventCreate(&ev[i]));
	std::vector<float> tf, tb, tu, tt;
	float first = 0.0f;
	for (int it = 0; it <= iters; it++) {
		v.t = sp.t = (uint64_t)it;
		be->zero(be, dx, n * 4);
		CUDA_OK(cudaEventRecord(ev[0], 0));
		if (pl->forward(self, &io, &err)) {
			fprintf(stderr, "bench_moe: forward: %s\n", err.msg);
			exit(1);
		}
		CUDA_OK(cudaEventRecord(ev[1], 0));
		io.vote = &v;
		if (pl->backward(self, &io, &err)) {
			fprintf(stderr, "bench_moe: backward: %s\n", err.msg);
			exit(1);
		}
		CUDA_OK(cudaEventRecord(ev[2], 0));
		arb_harness_step(H, &sp, NULL);
		CUDA_OK(cudaEventRecord(ev[3], 0));
		CUDA_OK(cudaEventSynchronize(ev[3]));
		float a, b, c, d;
		CUDA_OK(cudaEventElapsedTime(&a, ev[0], ev[1]));
		CUDA_OK(cudaEventElapsedTime(&b, ev[1], ev[2]));
		CUDA_OK(cudaEventElapsedTime(&c, ev[2], ev[3]));
		CUDA_OK(cudaEventElapsedTime(&d, ev[0], ev[3]));
		if (it == 0) {
			first = d;
			continue;
		}
		tf.push_back(a);
		tb.push_back(b);
		tu.push_back(c);
		tt.push_back(d);
	}
	int64_t M = (int64_t)B * T;
	printf("moe impl=arbcore shape=%s B=%d L=%d D=%d E=%d k=%d r=%d F=%d "
	       "path=%s first_ms=%.3f fwd_ms=%.3f bwd_ms=%.3f upd_ms=%.3f "
	       "total_ms=%.3f iters=%d\n", label, B, T, D, E, k, r, 4 * D,
	       M <= dense ? "dense" : "sparse", first, median(tf), median(tb),
	       median(tu), median(tt), iters);
	fflush(stdout);
	for (int i = 0; i < 4; i++) cudaEventDestroy(ev[i]);
	be->free(be, x);
	be->free(be, y);
	be->free(be, dy);
	be->free(be, dx);
	arb_harness_free(H); /* pl->destroy(self), the tensors */
	free(H);
}

/* The peer of equal active width inside arbcore: a dense ternary SwiGLU FFN
 * (gate, up: F x D; down: D x F; F = 4D, the moe's shared width) built from
 * the backend's ops, forward + backward (input gradient and sign votes) +
 * the ternary step of its three tensors, timed like bench_shape. */
static void bench_dense_ffn(arb_backend *be, const char *label, int B, int T,
			    int D, int iters)
{
	int F = 4 * D;
	int64_t M = (int64_t)B * T;
	arb_harness *H = (arb_harness *)calloc(1, sizeof *H);
	arb_model_info mi;
	memset(&mi, 0, sizeof mi);
	mi.d_model = D;
	mi.n_layers = 1;
	mi.n_heads = 8;
	mi.ctx = T;
	mi.batch = B;
	mi.group_size = 32;
	mi.seed = 7;
	arb_harness_init(H, be, &mi);
	H->accum_init = 4;
	arb_error err;
	memset(&err, 0, sizeof err);
	const arb_host *h = &H->host;
	arb_tern *wg = NULL, *wu = NULL, *wd = NULL;
	if (h->tern_create(h, "ffn", "gate", F, D, NULL, &wg, &err) ||
	    h->tern_create(h, "ffn", "up", F, D, NULL, &wu, &err) ||
	    h->tern_create(h, "ffn", "down", D, F, NULL, &wd, &err)) {
		fprintf(stderr, "bench_moe: dense ffn: %s\n", err.msg);
		exit(1);
	}
	size_t n = (size_t)M * D, nf = (size_t)M * F;
	std::vector<float> hx(n), hdy(n);
	uint64_t z = 99;
	for (size_t i = 0; i < n; i++) {
		z = arb_mix64(z);
		hx[i] = (float)((z >> 40) / 16777216.0) * 2.0f - 1.0f;
		hdy[i] = (float)(((z >> 8) & 0xffff) / 65536.0 - 0.5) * 1e-3f;
	}
	float *x = (float *)be->alloc(be, n * 4), *y = (float *)be->alloc(be, n * 4);
	float *dy = (float *)be->alloc(be, n * 4), *dx = (float *)be->alloc(be, n * 4);
	float *a = (float *)be->alloc(be, nf * 4), *b = (float *)be->alloc(be, nf * 4);
	float *hh = (float *)be->alloc(be, nf * 4), *dh = (float *)be->alloc(be, nf * 4);
	float *da = (float *)be->alloc(be, nf * 4), *db = (float *)be->alloc(be, nf * 4);
	be->upload(be, x, hx.data(), n * 4);
	be->upload(be, dy, hdy.data(), n * 4);
	arb_vote v;
	memset(&v, 0, sizeof v);
	v.kind = ARB_VOTE_SIGN;
	v.step = 1;
	v.sr_R = 1;
	v.seed = 7;
	arb_step sp;
	memset(&sp, 0, sizeof sp);
	sp.threshold = 8;
	sp.reset_mode = ARB_RESET_ZERO;
	sp.order = ARB_ORDER_E_FIRST;
	sp.e_threshold = 64;
	sp.e_min = -30;
	sp.e_max = 10;
	sp.seed = 7;
	cudaEvent_t ev[4];
	for (int i = 0; i < 4; i++) CUDA_OK(cudaEventCreate(&ev[i]));
	std::vector<float> tf, tb, tu, tt;
	float first = 0.0f;
	for (int it = 0; it <= iters; it++) {
		v.t = sp.t = (uint64_t)it;
		CUDA_OK(cudaEventRecord(ev[0], 0));
		be->linear_forward(be, wg, x, a, M, 0);
		be->linear_forward(be, wu, x, b, M, 0);
		be->swiglu_forward(be, a, b, hh, (int64_t)nf);
		be->linear_forward(be, wd, hh, y, M, 0);
		CUDA_OK(cudaEventRecord(ev[1], 0));
		be->linear_backward_x(be, wd, dy, dh, M, 0);
		be->linear_vote(be, wd, hh, dy, M, &v);
		be->swiglu_backward(be, a, b, dh, da, db, (int64_t)nf);
		be->linear_backward_x(be, wg, da, dx, M, 0);
		be->linear_backward_x(be, wu, db, dx, M, 1);
		be->linear_vote(be, wg, x, da, M, &v);
		be->linear_vote(be, wu, x, db, M, &v);
		CUDA_OK(cudaEventRecord(ev[2], 0));
		arb_harness_step(H, &sp, NULL);
		CUDA_OK(cudaEventRecord(ev[3], 0));
		CUDA_OK(cudaEventSynchronize(ev[3]));
		float t0, t1, t2, t3;
		CUDA_OK(cudaEventElapsedTime(&t0, ev[0], ev[1]));
		CUDA_OK(cudaEventElapsedTime(&t1, ev[1], ev[2]));
		CUDA_OK(cudaEventElapsedTime(&t2, ev[2], ev[3]));
		CUDA_OK(cudaEventElapsedTime(&t3, ev[0], ev[3]));
		if (it == 0) {
			first = t3;
			continue;
		}
		tf.push_back(t0);
		tb.push_back(t1);
		tu.push_back(t2);
		tt.push_back(t3);
	}
	printf("ffn impl=arbcore-dense-ternary shape=%s B=%d L=%d D=%d F=%d "
	       "first_ms=%.3f fwd_ms=%.3f bwd_ms=%.3f upd_ms=%.3f total_ms=%.3f "
	       "iters=%d\n", label, B, T, D, F, first, median(tf), median(tb),
	       median(tu), median(tt), iters);
	fflush(stdout);
	for (int i = 0; i < 4; i++) cudaEventDestroy(ev[i]);
	float *bufs[] = { x, y, dy, dx, a, b, hh, dh, da, db };
	for (float *p : bufs) be->free(be, p);
	arb_harness_free(H);
	free(H);
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
	bench_shape(pl, be, "small", 2, 8, 512, 8, 2, 16, 128, 200);
	bench_shape(pl, be, "small-sparse", 2, 8, 512, 8, 2, 16, 0, 200);
	bench_shape(pl, be, "large", 32, 512, 1024, 16, 2, 16, 128, 20);
	/* dense ternary SwiGLU of the moe's shared width F = 4D (its active
	 * width without the rank-r expert deltas) on the same tokens */
	bench_dense_ffn(be, "small", 2, 8, 512, 200);
	bench_dense_ffn(be, "large", 32, 512, 1024, 20);
	return 0;
}
