#!/usr/bin/env python3
"""bench/moe_torch.py -- the peer of bench/bench_moe.cu: the same
SharedProjectionMoE in PyTorch bf16 (float weights, same shapes), timed with
CUDA events: forward + backward + optimizer update, median of N steady-state
iterations after one first call. Prints the same line format as bench_moe:

  moe impl=torch-bf16 shape=small B=2 L=8 D=512 E=8 k=2 r=16 F=2048
      path=dense first_ms=... fwd_ms=... bwd_ms=... upd_ms=... total_ms=...

Model (plugins/moe/README.md):
  logits = x R^T; top-k (ties -> lower index: torch.topk on equal values is
  not guaranteed to prefer the lower index, irrelevant for timing);
  w = softmax of the k selected logits
  g_e = Gs x + Bg_e Ag_e x, u_e = Us x + Bu_e Au_e x, h_e = silu(g_e) u_e
  y = Ds sum_{e in topk} w_e h_e ; aux = balance * E * sum_e f_e Pbar_e
Dense path (tokens <= dense_max): every expert's delta on all tokens, zero
weight where unselected (batched einsum). Sparse path: tokens sorted by
expert, per-expert gathered rows (the usual PyTorch expert loop).

Usage: python3 bench/moe_torch.py [--iters N] [--fp32] [--compile]
"""
import argparse
import sys


def build(torch, D, E, r, F, dtype, device):
    def p(*shape, fan_in):
        return torch.nn.Parameter(
            torch.randn(*shape, dtype=torch.float32, device=device)
            .mul_(fan_in ** -0.5).to(dtype))
    return {
        "router": p(E, D, fan_in=D),
        "gate": p(F, D, fan_in=D),
        "up": p(F, D, fan_in=D),
        "down": p(D, F, fan_in=F),
        "a": p(E, 2 * r, D, fan_in=D),     # [Ag_e; Au_e] per expert
        "bg": p(E, F, r, fan_in=r),
        "bu": p(E, F, r, fan_in=r),
    }


def moe_forward(torch, W, x, k, balance, dense_max):
    F_ = torch.nn.functional
    M, D = x.shape
    E, twor, _ = W["a"].shape
    r = twor // 2
    logits = x @ W["router"].t()                       # [M,E]
    top, idx = torch.topk(logits.float(), k, dim=-1)   # [M,k]
    w = torch.softmax(top, dim=-1).to(x.dtype)
    probs = torch.softmax(logits.float(), dim=-1)
    counts = torch.bincount(idx.reshape(-1), minlength=E).float()
    aux = balance * E * ((counts / (M * k)) * probs.mean(0)).sum()
    g0 = x @ W["gate"].t()                             # [M,F]
    u0 = x @ W["up"].t()
    a = torch.einsum("md,esd->ems", x, W["a"])          # [E,M,2r]
    if M <= dense_max:
        dg = torch.einsum("emr,efr->emf", a[:, :, :r], W["bg"])
        du = torch.einsum("emr,efr->emf", a[:, :, r:], W["bu"])
        h = F_.silu(g0.unsqueeze(0) + dg) * (u0.unsqueeze(0) + du)  # [E,M,F]
        wd = torch.zeros(E, M, dtype=x.dtype, device=x.device)
        wd.scatter_(0, idx.t(), w.t())                 # [E,M] (k distinct)
        c = torch.einsum("em,emf->mf", wd, h)
    else:
        flat = idx.reshape(-1)
        order = torch.argsort(flat, stable=True)
        tok = order // k
        wt = w.reshape(-1)[order]
        cnt = counts.long().tolist()                    # host sync, as in ARBS
        c = torch.zeros_like(g0)
        start = 0
        for e in range(E):
            n = cnt[e]
            if n == 0:
                continue
            t = tok[start:start + n]
            ae = a[e].index_select(0, t)
            g = g0.index_select(0, t) + ae[:, :r] @ W["bg"][e].t()
            u = u0.index_select(0, t) + ae[:, r:] @ W["bu"][e].t()
            he = F_.silu(g) * u * wt[start:start + n].unsqueeze(1)
            c.index_add_(0, t, he)
            start += n
    y = c @ W["down"].t()
    return y, aux


def bench(torch, label, B, L, D, E, k, r, dense_max, iters, dtype, opt_name):
    device = "cuda"
    F = 4 * D
    torch.manual_seed(0)
    W = build(torch, D, E, r, F, dtype, device)
    params = list(W.values())
    if opt_name == "adamw":
        opt = torch.optim.AdamW(params, lr=1e-4, foreach=True)
    else:
        opt = torch.optim.SGD(params, lr=1e-4, foreach=True)
    M = B * L
    x = torch.randn(M, D, device=device, dtype=dtype)
    dy = torch.randn(M, D, device=device, dtype=dtype) * 1e-3
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    tf, tb, tu, tt = [], [], [], []
    first = 0.0
    for it in range(iters + 1):
        ev[0].record()
        y, aux = moe_forward(torch, W, x, k, 0.01, dense_max)
        ev[1].record()
        torch.autograd.backward([y, aux], [dy, torch.ones_like(aux)])
        ev[2].record()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ev[3].record()
        torch.cuda.synchronize()
        a = ev[0].elapsed_time(ev[1])
        b = ev[1].elapsed_time(ev[2])
        c = ev[2].elapsed_time(ev[3])
        d = ev[0].elapsed_time(ev[3])
        if it == 0:
            first = d
            continue
        tf.append(a)
        tb.append(b)
        tu.append(c)
        tt.append(d)

    def med(v):
        return sorted(v)[len(v) // 2]
    name = "torch-bf16" if dtype == torch.bfloat16 else "torch-fp32"
    print(f"moe impl={name}-{opt_name} shape={label} B={B} L={L} D={D} E={E} "
          f"k={k} r={r} F={F} path={'dense' if M <= dense_max else 'sparse'} "
          f"first_ms={first:.3f} fwd_ms={med(tf):.3f} bwd_ms={med(tb):.3f} "
          f"upd_ms={med(tu):.3f} total_ms={med(tt):.3f} iters={iters}",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=0,
                    help="steady-state iterations (0: 200 small, 20 large)")
    ap.add_argument("--fp32", action="store_true", help="float32 weights")
    ap.add_argument("--opt", choices=["adamw", "sgd"], default="adamw")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("moe_torch: PyTorch is not installed", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("moe_torch: no CUDA device", file=sys.stderr)
        return 1
    dtype = torch.float32 if args.fp32 else torch.bfloat16
    small = args.iters or 200
    large = args.iters or 20
    bench(torch, "small", 2, 8, 512, 8, 2, 16, 128, small, dtype, args.opt)
    bench(torch, "small-sparse", 2, 8, 512, 8, 2, 16, 0, small, dtype, args.opt)
    bench(torch, "large", 32, 512, 1024, 16, 2, 16, 128, large, dtype, args.opt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
