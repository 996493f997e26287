#!/usr/bin/env python3
"""bench/float_ref.py -- the float reference for arbcore's learning comparison.

The arbcore text trunk of core/model.h, with float weights trained by AdamW,
on the same data pipeline, so that a ternary run and a float run of the same
shape can be compared curve against curve (bench/compare_curves.py).

Architecture (core/model.h). A sequence is 3*(T+1) bytes; position p (0..T-1)
holds input bytes b[3p..3p+2] and predicts the next trigram c = b[3p+3..3p+5]:

    x_p   = sum_j Emb[256*j + b[3p+j]] + pos_scale * sinusoid(p)   Emb: 768 x D
    block = x += O(Attn(Q n(x), K n(x), V n(x)));  x += W2(silu(W1 u) * W3 u),
            u = n(x); latent_kv r > 0: K = Wuk Wdkv n(x), V = Wuv Wdkv n(x)
    z     = n(x)
    head  = u_j = z + sum_{i<j} Cond[256*i + c_i]     Cond: 512 x D
            logits_j = Head_j n(u_j), j = 0, 1, 2     (three 256 x D)
    loss  = mean cross-entropy (nats) over the B*T*3 predicted bytes;
            bits per byte = loss / ln 2.

n() is RMSNorm without a learnable gain (eps 1e-5); attention is causal,
multi-head, scaled by 1/sqrt(head_dim); no linear has a bias. Init: every
linear N(0, 1/fan_in), the tables Emb and Cond N(0, 1).

Data (the semantics of arbcore's [data] section): the files of --data
(comma-separated) are read as bytes (at most --max-bytes of each, 0 = all;
.xz files are stream-decompressed with lzma) and concatenated. Validation
text is --val-path (read the same way) or else the last val_fraction of the
concatenation, the rest being training text. A training batch is B windows
of 3*(ctx+1) bytes at uniformly random byte offsets; validation uses
eval_batches fixed batches of B windows at evenly spaced byte offsets over the
validation text (offset_i = floor(i * (len - W) / (n - 1)), n = eval_batches*B).

Optimizer: AdamW (lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on
every matrix, the embedding tables included unless --wd-emb 0), a linear
warm-up of --warmup steps, then a constant (default) or cosine learning rate.
Gradient clipping at --grad-clip (1.0; 0 = off).

Output: a progress line every --log-interval steps, an eval line every
--eval-interval steps (and at step 0 and at the end), and a CSV (--out) with
the columns of arbcore's metrics.csv:
    step,time_s,train_loss,train_bpb,val_loss,val_bpb,tokens
(tokens = predicted bytes so far = step * batch * ctx * 3; val_* empty on rows
without an evaluation; train_* = mean over the steps since the previous row),
then val_bpb0,val_bpb1,val_bpb2: validation bpb of byte 0, 1, 2 of the
predicted trigram (a diagnostic; their mean is val_bpb).

--config FILE reads an arbcore INI file ([model], [train], [data], [run].seed)
so that a float run has exactly the shape of a ternary run; flags given on
the command line override it. --selftest checks the data, window, split,
schedule, CSV and INI logic without torch. torch is imported only to train.
"""

import argparse
import configparser
import csv
import lzma
import math
import os
import random
import sys
import tempfile
import time

LN2 = math.log(2.0)
RMS_EPS = 1e-5

# arbcore's default data set (core/schema.c DEF_DATA)
DEF_DATA = ",".join("/usr/share/games/fortunes/" + n for n in (
    "literature", "wisdom", "people", "humorists", "science", "politics",
    "men-women", "cookie"))

CSV_COLUMNS = ("step", "time_s", "train_loss", "train_bpb", "val_loss",
               "val_bpb", "tokens", "val_bpb0", "val_bpb1", "val_bpb2")

# INI (section, key) -> argparse dest. Keys of other sections are ignored.
INI_KEYS = {
    ("run", "seed"): "seed",
    ("data", "path"): "data",
    ("data", "val_path"): "val_path",
    ("data", "val_fraction"): "val_fraction",
    ("data", "max_bytes"): "max_bytes",
    ("model", "d_model"): "d_model",
    ("model", "layers"): "layers",
    ("model", "heads"): "heads",
    ("model", "ctx"): "ctx",
    ("model", "ffn_hidden"): "ffn_hidden",
    ("model", "latent_kv"): "latent_kv",
    ("model", "pos_scale"): "pos_scale",
    ("model", "head_hidden"): "head_hidden",
    ("train", "batch"): "batch",
    ("train", "steps"): "steps",
    ("train", "time_limit"): "time_limit",
    ("train", "eval_interval"): "eval_interval",
    ("train", "eval_batches"): "eval_batches",
    ("train", "log_interval"): "log_interval",
}


# --------------------------------------------------------------------------
# command line

def build_parser():
    p = argparse.ArgumentParser(
        description="Float (AdamW) reference of the arbcore trunk "
                    "(core/model.h) for learning comparisons.")
    a = p.add_argument
    a("--config", default="", help="arbcore INI file: take [model] [train] "
      "[data] and [run].seed from it (command-line flags override)")
    a("--selftest", action="store_true",
      help="check data/window/split/CSV/INI logic without torch, then exit")
    a("--print-config", action="store_true",
      help="print the resolved settings and exit (no torch needed)")
    g = p.add_argument_group("model (INI [model])")
    g.add_argument("--d-model", dest="d_model", type=int, default=128)
    g.add_argument("--layers", type=int, default=2)
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--ctx", type=int, default=64,
                   help="positions per sequence (each = 3 bytes)")
    g.add_argument("--ffn-hidden", dest="ffn_hidden", type=int, default=0,
                   help="SwiGLU hidden width (0 = 4 * d_model)")
    g.add_argument("--head-hidden", dest="head_hidden", type=int, default=-1,
                   help="ByteHead SwiGLU width (-1 = 2 * d_model, 0 = none)")
    g.add_argument("--latent-kv", dest="latent_kv", type=int, default=0,
                   help="latent KV rank (0 = plain K/V)")
    g.add_argument("--pos-scale", dest="pos_scale", type=float, default=0.5)
    g = p.add_argument_group("training (INI [train], [run])")
    g.add_argument("--batch", type=int, default=16)
    g.add_argument("--steps", type=int, default=1000)
    g.add_argument("--time-limit", dest="time_limit", type=float, default=0.0,
                   help="seconds; stop, evaluate and finish (0 = none)")
    g.add_argument("--eval-interval", dest="eval_interval", type=int,
                   default=100, help="0 = only at step 0 and the end")
    g.add_argument("--eval-batches", dest="eval_batches", type=int, default=8)
    g.add_argument("--log-interval", dest="log_interval", type=int, default=10)
    g.add_argument("--seed", type=int, default=1)
    g = p.add_argument_group("data (INI [data])")
    g.add_argument("--data", default=DEF_DATA,
                   help="training text, comma-separated files (.xz allowed)")
    g.add_argument("--val-path", dest="val_path", default="",
                   help="validation text (comma-separated); empty = last "
                        "val_fraction of --data")
    g.add_argument("--val-fraction", dest="val_fraction", type=float,
                   default=0.1)
    g.add_argument("--max-bytes", dest="max_bytes", type=int, default=0,
                   help="read at most this many bytes of each file (0 = all)")
    g = p.add_argument_group("optimizer (float only)")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--beta1", type=float, default=0.9)
    g.add_argument("--beta2", type=float, default=0.95)
    g.add_argument("--wd", type=float, default=0.1,
                   help="AdamW weight decay on matrices")
    g.add_argument("--wd-emb", dest="wd_emb", type=int, default=1,
                   choices=(0, 1),
                   help="1: decay the Emb/Cond tables too (they are "
                        "matrices); 0: no decay on them")
    g.add_argument("--warmup", type=int, default=200,
                   help="linear warm-up steps")
    g.add_argument("--schedule", choices=("constant", "cosine"),
                   default="constant", help="learning rate after warm-up")
    g.add_argument("--min-lr-frac", dest="min_lr_frac", type=float,
                   default=0.1, help="cosine: final lr = lr * this")
    g.add_argument("--grad-clip", dest="grad_clip", type=float, default=1.0,
                   help="global gradient-norm clip (0 = off)")
    g = p.add_argument_group("execution")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   default="auto")
    g.add_argument("--bf16", action="store_true",
                   help="bf16 autocast for the matrix products")
    g.add_argument("--no-tf32", dest="tf32", action="store_false",
                   help="keep fp32 matrix products in full fp32")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward (eval stays "
                        "eager)")
    g.add_argument("--out", default="",
                   help="metrics CSV path (empty = none)")
    return p


def read_ini(path):
    """Return {dest: string value} for the INI keys float_ref understands,
    plus the list of (section.key) that were ignored."""
    cp = configparser.ConfigParser(interpolation=None, strict=False,
                                   comment_prefixes=("#", ";"),
                                   inline_comment_prefixes=(";",))
    with open(path, "r", encoding="utf-8") as f:
        cp.read_file(f, source=path)
    vals, ignored = {}, []
    for sec in cp.sections():
        base = sec.split(":", 1)[0].strip().lower()
        for key, v in cp.items(sec, raw=True):
            dest = INI_KEYS.get((base, key.strip().lower()))
            if dest is None or ":" in sec:
                ignored.append("%s.%s" % (sec, key))
            else:
                vals[dest] = v.strip().strip('"')
    return vals, ignored


def parse_args(argv=None):
    parser = build_parser()
    pre, _ = parser.parse_known_args(argv)
    ini_ignored = []
    if pre.config:
        vals, ini_ignored = read_ini(pre.config)
        types = {act.dest: act.type for act in parser._actions}
        conv = {}
        for dest, s in vals.items():
            t = types.get(dest)
            try:
                conv[dest] = t(s) if t is not None else s
            except ValueError:
                # INI may write an integer as "1e6" etc.
                conv[dest] = t(float(s))
        parser.set_defaults(**conv)
    args = parser.parse_args(argv)
    args.ini_ignored = ini_ignored
    check_args(args, parser)
    return args


def check_args(args, parser):
    if args.selftest:
        return
    if args.d_model % args.heads:
        parser.error("d_model (%d) must be a multiple of heads (%d)"
                     % (args.d_model, args.heads))
    for name in ("d_model", "heads", "ctx", "batch", "eval_batches",
                 "log_interval"):
        if getattr(args, name) < 1:
            parser.error("%s must be >= 1" % name)
    for name in ("layers", "steps", "ffn_hidden", "latent_kv", "warmup",
                 "max_bytes", "eval_interval"):
        if getattr(args, name) < 0:
            parser.error("%s must be >= 0" % name)
    if not (0.0 < args.val_fraction < 1.0):
        parser.error("val_fraction must be in (0, 1)")


def ffn_width(args):
    return args.ffn_hidden if args.ffn_hidden > 0 else 4 * args.d_model


def head_width(args):
    """ByteHead SwiGLU width: -1 = 2 * d_model, 0 = no head FFN."""
    h = getattr(args, "head_hidden", -1)
    return 2 * args.d_model if h < 0 else h


def window_bytes(ctx):
    return 3 * (ctx + 1)


# --------------------------------------------------------------------------
# data (pure python)

def read_capped(f, cap, chunk=1 << 24):
    """Read a binary stream to the end or to `cap` bytes (0 = no cap)."""
    buf = bytearray()
    while cap == 0 or len(buf) < cap:
        want = chunk if cap == 0 else min(chunk, cap - len(buf))
        b = f.read(want)
        if not b:
            break
        buf += b
    return buf


def read_file(path, max_bytes):
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rb") as f:
        return read_capped(f, max_bytes)


def split_paths(spec):
    return [s.strip() for s in spec.split(",") if s.strip()]


def load_text(spec, max_bytes):
    """Concatenate the files of a comma-separated list (each capped)."""
    paths = split_paths(spec)
    if not paths:
        raise ValueError("no data file given")
    buf = bytearray()
    for p in paths:
        buf += read_file(p, max_bytes)
    return buf


def split_train_val(data, val_data, val_fraction, window):
    """(train, val) byte buffers. val_data None: the last val_fraction of
    data (floor of len * fraction bytes, at least one window) is held out,
    as core/data.c does."""
    if val_data is None:
        n_val = max(int(len(data) * val_fraction), window)
        if n_val >= len(data):
            raise ValueError("training text (%d bytes) is too short to hold "
                             "out a validation window of %d bytes and still "
                             "train" % (len(data), window))
        train, val = data[:len(data) - n_val], data[len(data) - n_val:]
    else:
        train, val = data, val_data
    if len(train) < window:
        raise ValueError("training text has %d bytes, fewer than one window "
                         "(%d = 3*(ctx+1))" % (len(train), window))
    if len(val) < window:
        raise ValueError("validation text has %d bytes, fewer than one "
                         "window (%d = 3*(ctx+1))" % (len(val), window))
    return train, val


def train_offsets(rng, n_bytes, window, count):
    """Uniform random window starts in [0, n_bytes - window]."""
    hi = n_bytes - window
    return [rng.randint(0, hi) for _ in range(count)]


def eval_offsets(n_bytes, window, count):
    """count window starts evenly spaced over [0, n_bytes - window]."""
    span = n_bytes - window
    if count <= 1:
        return [0]
    return [(i * span) // (count - 1) for i in range(count)]


def split_window(w, ctx):
    """Pure-python view of one window: (inputs, targets), each a list of ctx
    trigrams; targets[p] is the trigram after inputs[p]."""
    assert len(w) == window_bytes(ctx)
    tri = [tuple(w[3 * p:3 * p + 3]) for p in range(ctx + 1)]
    return tri[:ctx], tri[1:]


def lr_at(step, args):
    """Learning rate of optimizer step `step` (0-based)."""
    if args.warmup > 0 and step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.schedule == "constant":
        return args.lr
    total = max(1, args.steps - args.warmup)
    prog = min(1.0, max(0.0, (step - args.warmup) / total))
    lo = args.lr * args.min_lr_frac
    return lo + (args.lr - lo) * 0.5 * (1.0 + math.cos(math.pi * prog))


def expected_params(args):
    """Parameter count of the trunk by formula (checked against torch)."""
    D, L, F, r = args.d_model, args.layers, ffn_width(args), args.latent_kv
    attn = 2 * D * D + (D * r + 2 * r * D if r > 0 else 2 * D * D)
    return {
        "emb": 768 * D,
        "attn": L * attn,
        "ffn": L * 3 * D * F,
        "cond": 515 * D,
        "head": 3 * 256 * D + 3 * D * head_width(args),
    }


class MetricsCSV:
    """The run's metrics CSV; one row per log or eval point, flushed."""

    def __init__(self, path):
        self.f = None
        if path:
            d = os.path.dirname(path)
            if d:
                os.makedirs(d, exist_ok=True)
            self.f = open(path, "w", newline="")
            self.w = csv.writer(self.f)
            self.w.writerow(CSV_COLUMNS)
            self.f.flush()

    @staticmethod
    def fmt(v, spec):
        return "" if v is None else spec % v

    def row(self, step, time_s, train_loss, val_loss, tokens, slots=None):
        if self.f is None:
            return
        slots = slots or (None, None, None)
        self.w.writerow([
            str(step), "%.3f" % time_s,
            self.fmt(train_loss, "%.6f"),
            self.fmt(None if train_loss is None else train_loss / LN2, "%.6f"),
            self.fmt(val_loss, "%.6f"),
            self.fmt(None if val_loss is None else val_loss / LN2, "%.6f"),
            str(tokens)] + [self.fmt(None if v is None else v / LN2, "%.6f")
                            for v in slots])
        self.f.flush()

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None


# --------------------------------------------------------------------------
# selftest (no torch)

def selftest():
    ok = [0]

    def check(cond, what):
        if not cond:
            raise AssertionError("selftest: " + what)
        ok[0] += 1

    rng = random.Random(7)
    text = bytes(rng.randrange(32, 127) for _ in range(10007))
    tmp = tempfile.mkdtemp(prefix="float_ref_selftest_")
    p1 = os.path.join(tmp, "a.txt")
    p2 = os.path.join(tmp, "b.txt.xz")
    with open(p1, "wb") as f:
        f.write(text[:6000])
    with lzma.open(p2, "wb") as f:
        f.write(text[6000:])

    # reading: plain, xz, caps (chunked), concatenation
    check(read_file(p1, 0) == text[:6000], "plain read")
    check(read_file(p2, 0) == text[6000:], "xz read")
    check(read_file(p2, 1234) == text[6000:7234], "xz capped read")
    with open(p1, "rb") as f:
        check(read_capped(f, 5000, chunk=7) == text[:5000], "chunked cap")
    check(load_text(p1 + ", " + p2, 0) == text, "concatenation")
    check(load_text(p1 + "," + p2, 100) == text[:100] + text[6000:6100],
          "max_bytes is per file")
    try:
        load_text(" , ", 0)
        check(False, "empty path list refused")
    except ValueError:
        ok[0] += 1

    # split: last fraction held out; val_path wins
    ctx = 5
    W = window_bytes(ctx)
    check(W == 18, "window = 3*(ctx+1)")
    data = load_text(p1 + "," + p2, 0)
    tr, va = split_train_val(data, None, 0.1, W)
    check(len(va) == int(len(data) * 0.1), "val size = floor(len*frac)")
    check(tr + va == data and va == data[len(data) - len(va):],
          "val is the tail")
    tr2, va2 = split_train_val(data, bytearray(text[:500]), 0.1, W)
    check(tr2 == data and va2 == text[:500], "val_path")
    tr3, va3 = split_train_val(bytearray(b"x" * 100), None, 0.1, W)
    check(len(va3) == W and len(tr3) == 100 - W, "val at least one window")
    try:
        split_train_val(bytearray(b"x" * W), None, 0.1, W)
        check(False, "text of one window refused")
    except ValueError:
        ok[0] += 1

    # training windows: in range, deterministic per seed, full coverage
    offs = train_offsets(random.Random(1), len(tr), W, 5000)
    check(all(0 <= o <= len(tr) - W for o in offs), "train offsets in range")
    check(offs == train_offsets(random.Random(1), len(tr), W, 5000),
          "train offsets deterministic")
    small = train_offsets(random.Random(3), W + 3, W, 400)
    check(set(small) == {0, 1, 2, 3}, "train offsets cover [0, len-W]")

    # eval windows: evenly spaced, first at 0, last at len-W, fixed
    ev = eval_offsets(len(va), W, 8 * 4)
    check(len(ev) == 32 and ev[0] == 0 and ev[-1] == len(va) - W,
          "eval offsets span")
    gaps = [b - a for a, b in zip(ev, ev[1:])]
    check(max(gaps) - min(gaps) <= 1, "eval offsets even")
    check(eval_offsets(len(va), W, 1) == [0], "single eval window")

    # window -> inputs / next-trigram targets
    w = bytes(range(W))
    inp, tgt = split_window(w, ctx)
    check(len(inp) == ctx and len(tgt) == ctx, "ctx positions")
    check(inp[0] == (0, 1, 2) and tgt[0] == (3, 4, 5), "target = next trigram")
    check(all(tgt[p] == inp[p + 1] for p in range(ctx - 1)), "shift by one")
    check(tgt[-1] == (15, 16, 17), "last target = last trigram")
    check(ctx * 3 == sum(len(t) for t in tgt), "3 predicted bytes/position")

    # lr schedule
    class A:
        lr, warmup, steps, schedule, min_lr_frac = 1e-3, 200, 1000, \
            "cosine", 0.1
    check(abs(lr_at(0, A) - 1e-3 / 200) < 1e-15, "warm-up start")
    check(abs(lr_at(199, A) - 1e-3) < 1e-15, "warm-up end")
    check(abs(lr_at(200, A) - 1e-3) < 1e-15, "cosine start")
    check(abs(lr_at(1000, A) - 1e-4) < 1e-15, "cosine end")
    check(lr_at(600, A) < lr_at(400, A), "cosine decays")
    A.schedule = "constant"
    check(lr_at(900, A) == 1e-3, "constant")

    # CSV
    cp = os.path.join(tmp, "sub", "m.csv")
    m = MetricsCSV(cp)
    m.row(0, 0.0, None, 5.545177444479562, 0, [LN2, 2 * LN2, 3 * LN2])
    m.row(10, 1.5, 2.0 * LN2, None, 10 * 16 * 64 * 3)
    m.close()
    with open(cp, newline="") as f:
        rows = list(csv.DictReader(f))
    check(tuple(rows[0].keys()) == CSV_COLUMNS, "csv columns")
    check(rows[0]["train_loss"] == "" and rows[0]["val_bpb"] == "8.000000",
          "csv eval row")
    check(rows[1]["train_bpb"] == "2.000000" and rows[1]["val_loss"] == ""
          and rows[1]["tokens"] == "30720" and rows[1]["val_bpb2"] == "",
          "csv train row")
    check(rows[0]["val_bpb1"] == "2.000000", "csv per-byte columns")

    # INI -> flags, CLI overrides, unknown sections ignored
    ini = os.path.join(tmp, "t.ini")
    with open(ini, "w") as f:
        f.write("; test\n[run]\ndir = runs/x\nseed = 9\n"
                "[data]\npath = %s ; inline comment\nmax_bytes = 4096\n"
                "[model]\nd_model = 96\nlayers = 3\nheads = 3\nctx = 32\n"
                "latent_kv = 16\npos_scale = 0.1\n"
                "[train]\nbatch = 8\nsteps = 50\neval_batches = 2\n"
                "[schedule]\nthreshold = 12\n[moe]\nexperts = 4\n" % p1)
    a = parse_args(["--config", ini, "--layers", "1"])
    check(a.d_model == 96 and a.heads == 3 and a.ctx == 32 and
          a.latent_kv == 16 and a.pos_scale == 0.1, "ini [model]")
    check(a.layers == 1, "command line overrides ini")
    check(a.batch == 8 and a.steps == 50 and a.eval_batches == 2 and
          a.seed == 9, "ini [train] [run]")
    check(a.data == p1 and a.max_bytes == 4096, "ini [data]")
    check("schedule.threshold" in a.ini_ignored and
          "moe.experts" in a.ini_ignored and "run.dir" in a.ini_ignored,
          "ignored keys reported")
    d = parse_args([])
    check(d.d_model == 128 and d.layers == 2 and d.heads == 4 and
          d.ctx == 64 and d.batch == 16 and d.eval_batches == 8 and
          d.pos_scale == 0.5 and d.val_fraction == 0.1 and
          d.eval_interval == 100 and d.data == DEF_DATA,
          "defaults = core/schema.c")

    # parameter formula
    class P:
        d_model, layers, ffn_hidden, latent_kv, head_hidden = 128, 2, 0, 0, -1
    e = expected_params(P)
    check(sum(e.values()) == 768 * 128 + 2 * (4 * 128 * 128 +
                                              3 * 128 * 512) +
          515 * 128 + 3 * 256 * 128 + 3 * 128 * 256, "param formula")

    for n in os.listdir(tmp):
        fp = os.path.join(tmp, n)
        if os.path.isdir(fp):
            for m2 in os.listdir(fp):
                os.remove(os.path.join(fp, m2))
            os.rmdir(fp)
        else:
            os.remove(fp)
    os.rmdir(tmp)
    check("torch" not in sys.modules, "torch not imported")
    print("float_ref selftest: %d checks passed" % ok[0])
    return 0


# --------------------------------------------------------------------------
# model (torch, imported lazily)

def make_model(args, torch):
    nn = torch.nn
    F = torch.nn.functional

    def rmsnorm(x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + RMS_EPS)
                ).type_as(x)

    def linear(n_in, n_out):
        lin = nn.Linear(n_in, n_out, bias=False)
        nn.init.normal_(lin.weight, mean=0.0, std=1.0 / math.sqrt(n_in))
        return lin

    def table(n, d):
        e = nn.Embedding(n, d)
        nn.init.normal_(e.weight, mean=0.0, std=1.0)
        return e

    def sinusoid(T, D):
        pos = torch.arange(T, dtype=torch.float64)[:, None]
        i = torch.arange((D + 1) // 2, dtype=torch.float64)[None, :]
        ang = pos * torch.exp(-math.log(10000.0) * (2.0 * i) / D)
        pe = torch.zeros(T, 2 * ((D + 1) // 2), dtype=torch.float64)
        pe[:, 0::2] = torch.sin(ang)
        pe[:, 1::2] = torch.cos(ang)
        return pe[:, :D].float()

    class Attention(nn.Module):
        def __init__(self, D, H, r):
            super().__init__()
            self.H, self.hd, self.r = H, D // H, r
            self.q = linear(D, D)
            if r > 0:
                self.dkv = linear(D, r)
                self.uk = linear(r, D)
                self.uv = linear(r, D)
            else:
                self.k = linear(D, D)
                self.v = linear(D, D)
            self.o = linear(D, D)

        def forward(self, x):
            B, T, D = x.shape
            q = self.q(x)
            if self.r > 0:
                c = self.dkv(x)
                k, v = self.uk(c), self.uv(c)
            else:
                k, v = self.k(x), self.v(x)
            q, k, v = (t.view(B, T, self.H, self.hd).transpose(1, 2)
                       for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               scale=1.0 / math.sqrt(self.hd))
            return self.o(y.transpose(1, 2).reshape(B, T, D))

    class SwiGLU(nn.Module):
        def __init__(self, D, Fh):
            super().__init__()
            self.w1 = linear(D, Fh)
            self.w3 = linear(D, Fh)
            self.w2 = linear(Fh, D)

        def forward(self, u):
            return self.w2(F.silu(self.w1(u)) * self.w3(u))

    class Block(nn.Module):
        def __init__(self, D, H, Fh, r):
            super().__init__()
            self.attn = Attention(D, H, r)
            self.ffn = SwiGLU(D, Fh)

        def forward(self, x):
            x = x + self.attn(rmsnorm(x))
            return x + self.ffn(rmsnorm(x))

    class Trunk(nn.Module):
        def __init__(self, a):
            super().__init__()
            D = a.d_model
            self.ctx, self.pos_scale = a.ctx, a.pos_scale
            self.emb = table(768, D)
            self.register_buffer("pe", sinusoid(a.ctx, D), persistent=False)
            self.register_buffer("emb_off", torch.tensor([0, 256, 512]),
                                 persistent=False)
            self.blocks = nn.ModuleList(
                Block(D, a.heads, ffn_width(a), a.latent_kv)
                for _ in range(a.layers))
            # rows 256*i + c_i condition byte j on earlier bytes i < j;
            # rows 512 + j are the per-slot rows
            self.cond = table(515, D)
            Hh = head_width(a)
            self.head_ffn = SwiGLU(D, Hh) if Hh > 0 else None
            self.heads = nn.ModuleList(linear(D, 256) for _ in range(3))

        def forward(self, w, per_slot=False):
            """w: (B, 3*(T+1)) uint8 -> mean CE (nats) per predicted byte;
            per_slot: the (3,) mean CE of byte j = 0, 1, 2 of the trigram
            (equal counts, so their mean is the loss)."""
            B = w.shape[0]
            T = w.shape[1] // 3 - 1
            tri = w.view(B, T + 1, 3).long()
            inp, tgt = tri[:, :T], tri[:, 1:]
            x = self.emb(inp + self.emb_off).sum(2) \
                + self.pos_scale * self.pe[:T]
            for blk in self.blocks:
                x = blk(x)
            z = rmsnorm(x)
            slot = self.cond.weight[512:515]
            c0 = self.cond(tgt[..., 0])
            u0 = z + slot[0]
            u1 = z + c0 + slot[1]
            u2 = z + c0 + self.cond(tgt[..., 1] + 256) + slot[2]

            def head_in(u):
                a = rmsnorm(u)
                if self.head_ffn is None:
                    return a
                return rmsnorm(u + self.head_ffn(a))
            logits = torch.stack([h(head_in(u)) for h, u in
                                  zip(self.heads, (u0, u1, u2))], dim=2)
            if per_slot:
                ce = F.cross_entropy(logits.float().reshape(-1, 256),
                                     tgt.reshape(-1), reduction="none")
                return ce.view(-1, 3).mean(0)
            return F.cross_entropy(logits.float().reshape(-1, 256),
                                   tgt.reshape(-1))

    return Trunk(args)


def param_groups(model):
    """Per-component counts: emb, attn, ffn, cond, head."""
    counts = {"emb": 0, "attn": 0, "ffn": 0, "cond": 0, "head": 0}
    for name, p in model.named_parameters():
        if name.startswith("emb."):
            counts["emb"] += p.numel()
        elif name.startswith("cond."):
            counts["cond"] += p.numel()
        elif name.startswith("heads.") or name.startswith("head_ffn."):
            counts["head"] += p.numel()
        elif ".attn." in name:
            counts["attn"] += p.numel()
        elif ".ffn." in name:
            counts["ffn"] += p.numel()
        else:
            raise RuntimeError("unclassified parameter " + name)
    return counts


# --------------------------------------------------------------------------
# training

def log(msg):
    print(msg, flush=True)


def train(args):
    import torch

    if args.device == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        raise SystemExit("float_ref: --device cuda but CUDA is not available")
    device = torch.device(dev)
    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    W = window_bytes(args.ctx)
    t_load = time.time()
    data = load_text(args.data, args.max_bytes)
    val_data = load_text(args.val_path, args.max_bytes) if args.val_path \
        else None
    train_buf, val_buf = split_train_val(data, val_data, args.val_fraction, W)
    log("data: train %d bytes, val %d bytes (%s), window %d bytes, "
        "read in %.1fs" % (len(train_buf), len(val_buf),
                           "val_path" if args.val_path else
                           "last %g of data" % args.val_fraction,
                           W, time.time() - t_load))

    # frombuffer shares train_buf's memory: keep train_buf alive
    train_dev = torch.frombuffer(train_buf, dtype=torch.uint8).to(device)
    n_train = len(train_buf)
    ar = torch.arange(W, device=device)

    B = args.batch
    n_eval = args.eval_batches * B
    ev_off = eval_offsets(len(val_buf), W, n_eval)
    val_t = torch.frombuffer(val_buf, dtype=torch.uint8)
    ev_idx = torch.tensor(ev_off, dtype=torch.long)[:, None] + \
        torch.arange(W)[None, :]
    eval_windows = val_t[ev_idx].view(args.eval_batches, B, W).to(device)

    model = make_model(args, torch).to(device)
    counts = param_groups(model)
    total = sum(counts.values())
    expect = expected_params(args)
    if counts != expect:
        raise RuntimeError("parameter count %r != formula %r"
                           % (counts, expect))
    log("model: d_model %d layers %d heads %d ctx %d ffn_hidden %d "
        "latent_kv %d pos_scale %g" % (args.d_model, args.layers, args.heads,
                                       args.ctx, ffn_width(args),
                                       args.latent_kv, args.pos_scale))
    log("params: %d total (%.3fM): emb %d attn %d ffn %d cond %d head %d"
        % (total, total / 1e6, counts["emb"], counts["attn"], counts["ffn"],
           counts["cond"], counts["head"]))

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_table = name.startswith("emb.") or name.startswith("cond.")
        if p.dim() >= 2 and (args.wd_emb or not is_table):
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": args.wd}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    opt_kw = dict(lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8)
    if dev == "cuda":
        opt_kw["fused"] = True
    opt = torch.optim.AdamW(groups, **opt_kw)
    log("optimizer: AdamW lr %g betas (%g, %g) wd %g (tables %s) warm-up %d "
        "then %s%s, grad clip %g" % (
            args.lr, args.beta1, args.beta2, args.wd,
            "decayed" if args.wd_emb else "not decayed", args.warmup,
            args.schedule,
            " to %g" % (args.lr * args.min_lr_frac)
            if args.schedule == "cosine" else "", args.grad_clip))

    fwd = torch.compile(model) if args.compile else model
    amp = args.bf16 and dev == "cuda"
    if args.bf16 and not amp:
        log("note: --bf16 ignored on cpu")

    def autocast():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16,
                              enabled=amp)

    def evaluate():
        model.eval()
        tot = torch.zeros(3, dtype=torch.float64, device=device)
        with torch.no_grad(), autocast():
            # eager model: with --bf16 --compile the compiled eval graph
            # gave erratic val losses on conf/tiny.ini (2026-11-22, H100)
            for i in range(args.eval_batches):
                tot += model(eval_windows[i], True).double()
        model.train()
        slots = [v / args.eval_batches for v in tot.tolist()]
        return sum(slots) / 3.0, slots

    rng = random.Random(args.seed)
    out = MetricsCSV(args.out)
    tok_step = B * args.ctx * 3
    log("run: batch %d, %d predicted bytes/step, steps %d, eval every %d on "
        "%d x %d windows, device %s%s%s" % (
            B, tok_step, args.steps, args.eval_interval, args.eval_batches, B,
            dev, " bf16" if amp else "", " compile" if args.compile else ""))

    t0 = time.time()
    best = (float("inf"), 0)

    def do_eval(step):
        nonlocal best
        vl, slots = evaluate()
        if vl < best[0]:
            best = (vl, step)
        log("eval step %d | val_loss %.4f | val_bpb %.4f | bpb by byte "
            "%.3f/%.3f/%.3f | best %.4f @ %d | %.1fs" % (
                step, vl, vl / LN2, slots[0] / LN2, slots[1] / LN2,
                slots[2] / LN2, best[0] / LN2, best[1], time.time() - t0))
        return vl, slots

    vl, slots = do_eval(0)
    out.row(0, time.time() - t0, None, vl, 0, slots)

    loss_acc = torch.zeros((), dtype=torch.float64, device=device)
    n_acc = 0
    t_last, step_last = time.time(), 0
    step = 0
    stop_reason = "steps"
    while step < args.steps:
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        offs = torch.tensor(train_offsets(rng, n_train, W, B),
                            dtype=torch.long).to(device, non_blocking=True)
        x = train_dev[offs[:, None] + ar]
        with autocast():
            loss = fwd(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        step += 1
        loss_acc += loss.detach().double()
        n_acc += 1

        timed_out = args.time_limit > 0 and \
            time.time() - t0 >= args.time_limit
        last = step == args.steps or timed_out
        is_log = step % args.log_interval == 0 or last
        is_eval = (args.eval_interval > 0 and step % args.eval_interval == 0) \
            or last
        if not (is_log or is_eval):
            continue
        tl = loss_acc.item() / n_acc
        if not math.isfinite(tl):
            log("step %d: non-finite training loss %r; stopping" % (step, tl))
            out.row(step, time.time() - t0, tl, None, step * tok_step)
            out.close()
            return 1
        now = time.time()
        if is_log:
            rate = (step - step_last) * tok_step / max(1e-9, now - t_last)
            log("step %d/%d | loss %.4f | bpb %.4f | lr %.3e | %.0f bytes/s "
                "| %.1fs" % (step, args.steps, tl, tl / LN2, lr, rate,
                             now - t0))
        vl, slots = do_eval(step) if is_eval else (None, None)
        out.row(step, time.time() - t0, tl, vl, step * tok_step, slots)
        loss_acc.zero_()
        n_acc = 0
        t_last, step_last = time.time(), step
        if timed_out:
            stop_reason = "time limit %gs" % args.time_limit
            break
    out.close()
    log("done (%s): %d steps, %d predicted bytes, %.1fs; final val_bpb %s; "
        "best val_bpb %.4f @ %d" % (
            stop_reason, step, step * tok_step, time.time() - t0,
            "%.4f" % (vl / LN2) if vl is not None else "-",
            best[0] / LN2, best[1]))
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.selftest:
        return selftest()
    if args.print_config:
        for k in sorted(vars(args)):
            if k not in ("selftest", "print_config"):
                print("%s = %s" % (k, getattr(args, k)))
        print("ffn_width = %d" % ffn_width(args))
        e = expected_params(args)
        print("params = %d (%s)" % (sum(e.values()), " ".join(
            "%s %d" % kv for kv in e.items())))
        return 0
    if args.config:
        log("config: %s (ignored: %s)" % (
            args.config, ", ".join(args.ini_ignored) or "nothing"))
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
