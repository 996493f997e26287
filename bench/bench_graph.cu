/*
 * bench/bench_graph.cu -- one MoEGraph hop's sparse steps on the GPU: the
 * edge aggregation (CSR by target), its transpose (backward) and the
 * per-edge sign gradient, with E active edges over N active nodes of width
 * Dn (default 1M edges, 64K nodes, Dn 64; argv: E N Dn). The kernels are the
 * plugin's own (graph.cu is compiled in). The PyTorch peer is
 * bench/graph_torch.py (index_add_ scatter with the same shapes).
 * Prints ms per call (median of 20 after 3 warm-ups) and effective GB/s
 * (bytes of the gathered source rows + written rows + the edge arrays).
 */
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "../plugins/graph/graph.cu"

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); exit(1); } } while (0)

static uint64_t mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

template <class F> static float time_ms(F f)
{
	cudaEvent_t a, b;
	CK(cudaEventCreate(&a));
	CK(cudaEventCreate(&b));
	for (int i = 0; i < 3; i++) f();
	std::vector<float> t;
	for (int i = 0; i < 20; i++) {
		CK(cudaEventRecord(a));
		f();
		CK(cudaEventRecord(b));
		CK(cudaEventSynchronize(b));
		float ms;
		CK(cudaEventElapsedTime(&ms, a, b));
		t.push_back(ms);
	}
	std::sort(t.begin(), t.end());
	return t[t.size() / 2];
}

int main(int argc, char **argv)
{
	int64_t E = argc > 1 ? atoll(argv[1]) : 1 << 20;
	int64_t N = argc > 2 ? atoll(argv[2]) : 1 << 16;
	int D = argc > 3 ? atoi(argv[3]) : 64;
	std::vector<int32_t> src(E), dst(E), eptr(N + 1, 0), tptr(N + 1, 0),
		esrc(E), edst(E), tdst(E);
	std::vector<float> ew(E), tw(E), esc(E);
	for (int64_t k = 0; k < E; k++) {
		src[k] = (int32_t)(mix(2 * k) % (uint64_t)N);
		dst[k] = (int32_t)(mix(2 * k + 1) % (uint64_t)N);
		eptr[dst[k] + 1]++;
		tptr[src[k] + 1]++;
	}
	for (int64_t v = 0; v < N; v++) eptr[v + 1] += eptr[v], tptr[v + 1] += tptr[v];
	std::vector<int32_t> f(eptr.begin(), eptr.end() - 1), g(tptr.begin(), tptr.end() - 1);
	for (int64_t k = 0; k < E; k++) {
		int32_t i = f[dst[k]]++;
		float inv = 1.0f / (float)(eptr[dst[k] + 1] - eptr[dst[k]]);
		esrc[i] = src[k];
		edst[i] = dst[k];
		esc[i] = inv;
		ew[i] = ((k % 3) - 1) * inv;
	}
	for (int64_t i = 0; i < E; i++) {
		int32_t t = g[esrc[i]]++;
		tdst[t] = edst[i];
		tw[t] = ew[i];
	}
	int32_t *d_eptr, *d_esrc, *d_edst, *d_tptr, *d_tdst;
	float *d_ew, *d_tw, *d_esc, *d_in, *d_out, *d_g;
	CK(cudaMalloc(&d_eptr, (N + 1) * 4));
	CK(cudaMalloc(&d_tptr, (N + 1) * 4));
	CK(cudaMalloc(&d_esrc, E * 4));
	CK(cudaMalloc(&d_edst, E * 4));
	CK(cudaMalloc(&d_tdst, E * 4));
	CK(cudaMalloc(&d_ew, E * 4));
	CK(cudaMalloc(&d_tw, E * 4));
	CK(cudaMalloc(&d_esc, E * 4));
	CK(cudaMalloc(&d_g, E * 4));
	CK(cudaMalloc(&d_in, N * D * 4));
	CK(cudaMalloc(&d_out, N * D * 4));
	CK(cudaMemcpy(d_eptr, eptr.data(), (N + 1) * 4, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d_tptr, tptr.data(), (N + 1) * 4, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d_esrc, esrc.data(), E * 4, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d_edst, edst.data(), E * 4, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d_tdst, tdst.data(), E * 4, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d_ew, ew.data(), E * 4, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d_tw, tw.data(), E * 4, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d_esc, esc.data(), E * 4, cudaMemcpyHostToDevice));
	std::vector<float> h(N * D);
	for (int64_t i = 0; i < N * D; i++) h[i] = (float)(mix(i + 99) >> 40) / 16777216.0f - 0.5f;
	CK(cudaMemcpy(d_in, h.data(), N * D * 4, cudaMemcpyHostToDevice));
	CK(cudaMemset(d_g, 0, E * 4));
	const graph_kernels *K = graph_cuda_kernels();
	double bytes = (double)E * D * 4 + (double)N * D * 4 + (double)E * 8 + N * 4;
	float fwd = time_ms([&] { K->csr(N, D, d_eptr, d_esrc, d_ew, d_in, d_out, 0); });
	float bwd = time_ms([&] { K->csr(N, D, d_tptr, d_tdst, d_tw, d_in, d_out, 0); });
	float dot = time_ms([&] { K->edge_dot(E, D, d_esrc, d_edst, d_esc, d_in, d_in, d_g); });
	char msg[256];
	if (K->check(msg, sizeof msg)) { fprintf(stderr, "%s\n", msg); return 1; }
	printf("graph hop: %lld edges, %lld nodes, Dn %d\n", (long long)E, (long long)N, D);
	printf("  aggregate (csr by target)   %8.3f ms  %7.1f GB/s\n", fwd, bytes / fwd / 1e6);
	printf("  transpose (csr by source)   %8.3f ms  %7.1f GB/s\n", bwd, bytes / bwd / 1e6);
	printf("  edge sign gradient (dot)    %8.3f ms\n", dot);
	return 0;
}
