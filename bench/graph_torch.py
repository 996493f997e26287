"""bench/graph_torch.py -- PyTorch peer of bench/bench_graph.cu: one MoEGraph
hop's edge aggregation as a float32 scatter (index_add_) with the same shapes
(default 1M edges, 64K nodes, Dn 64; argv: E N Dn), its backward (index_add_
by source) and the per-edge dot. Same random graph recipe, same timing rule
(median of 20 after 3 warm-ups, CUDA events). Run on the same GPU."""
import sys

import torch


def med_ms(f):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        f()
    t = []
    for _ in range(20):
        a.record()
        f()
        b.record()
        b.synchronize()
        t.append(a.elapsed_time(b))
    t.sort()
    return t[len(t) // 2]


def main():
    E = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 20
    N = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 16
    D = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    src = torch.randint(0, N, (E,), device=dev, generator=g)
    dst = torch.randint(0, N, (E,), device=dev, generator=g)
    sign = (torch.arange(E, device=dev) % 3 - 1).float()
    indeg = torch.zeros(N, device=dev).index_add_(0, dst, torch.ones(E, device=dev))
    w = sign / indeg[dst].clamp(min=1)
    x = torch.rand(N, D, device=dev, generator=g) - 0.5
    out = torch.zeros(N, D, device=dev)
    gvec = torch.zeros(E, device=dev)

    def fwd():
        out.zero_()
        out.index_add_(0, dst, x[src] * w[:, None])

    def bwd():
        out.zero_()
        out.index_add_(0, src, x[dst] * w[:, None])

    def dot():
        gvec.add_((x[dst] * x[src]).sum(1) / indeg[dst].clamp(min=1))

    nbytes = E * D * 4 + N * D * 4 + E * 8 + N * 4
    f, b, d = med_ms(fwd), med_ms(bwd), med_ms(dot)
    print(f"torch index_add_: {E} edges, {N} nodes, Dn {D} ({torch.cuda.get_device_name()})")
    print(f"  aggregate (scatter by target) {f:8.3f} ms  {nbytes / f / 1e6:7.1f} GB/s")
    print(f"  transpose (scatter by source) {b:8.3f} ms  {nbytes / b / 1e6:7.1f} GB/s")
    print(f"  edge sign gradient (dot)      {d:8.3f} ms")


if __name__ == "__main__":
    main()
