#!/usr/bin/env python3
"""bench/compare_curves.py -- compare validation curves of metrics CSVs.

Reads two or more metrics CSVs (arbcore's <run.dir>/metrics.csv and
bench/float_ref.py's --out) and prints markdown: validation bits per byte at
common x values (steps, predicted bytes, or seconds), then best and final
values and the ratio of each run to the baseline (by default the LAST file,
so `compare_curves.py ternary.csv float.csv` gives ternary/float).

    compare_curves.py [--by step|tokens|time_s] [--baseline LABEL|INDEX]
                      [--interp] [--rows N] [--tokens-per-step N,...]
                      [LABEL=]metrics.csv [LABEL=]metrics.csv ...

Columns used: step, time_s, val_bpb (or val_loss / ln 2), tokens (optional:
without it, tokens = step * --tokens-per-step of that file). Rows with an
empty validation value are skipped. x values common to every file are used
as they are; with --interp (or when fewer than two are common), the baseline's x
values inside every file's range are used and the other curves are linearly
interpolated there (marked ~); --by time_s always interpolates. Pure python, no dependencies.
"""

import argparse
import csv
import math
import os
import sys

LN2 = math.log(2.0)


def fnum(s):
    if s is None:
        return None
    s = s.strip()
    if not s:
        return None
    try:
        v = float(s)
    except ValueError:
        return None
    return math.inf if math.isnan(v) else v  # a diverged run: inf


def load(path, tokens_per_step):
    """Return a list of dicts {step, time_s, tokens, val_bpb} (eval rows)."""
    pts = []
    with open(path, newline="") as f:
        rows = csv.DictReader(
            line for line in f if line.strip() and not line.startswith("#"))
        if rows.fieldnames is None or "step" not in rows.fieldnames:
            raise SystemExit("%s: no 'step' column" % path)
        for r in rows:
            bpb = fnum(r.get("val_bpb"))
            if bpb is None:
                vl = fnum(r.get("val_loss"))
                bpb = None if vl is None else vl / LN2
            if bpb is None:
                continue
            step = fnum(r.get("step"))
            if step is None:
                continue
            tok = fnum(r.get("tokens"))
            if tok is None and tokens_per_step:
                tok = step * tokens_per_step
            pts.append({"step": int(step), "time_s": fnum(r.get("time_s")),
                        "tokens": tok, "val_bpb": bpb})
    # a resumed run may repeat steps: keep the last value of each step
    by_step = {}
    for p in pts:
        by_step[p["step"]] = p
    return [by_step[s] for s in sorted(by_step)]


def default_label(path, used):
    base = os.path.basename(path)
    stem = os.path.splitext(base)[0]
    lab = os.path.basename(os.path.dirname(os.path.abspath(path))) \
        if stem == "metrics" else stem
    lab = lab or path
    out, i = lab, 2
    while out in used:
        out, i = "%s-%d" % (lab, i), i + 1
    return out


def interp(curve, x):
    """Linear interpolation of [(x, y)] sorted by x; None outside."""
    if not curve or x < curve[0][0] or x > curve[-1][0]:
        return None
    lo, hi = 0, len(curve) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if curve[mid][0] <= x:
            lo = mid
        else:
            hi = mid
    (x0, y0), (x1, y1) = curve[lo], curve[hi]
    if x == x0:
        return y0
    if x == x1:
        return y1
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def ratio(num, den):
    if num is None or den is None or not math.isfinite(num) or \
            not math.isfinite(den) or den == 0:
        return "-"
    return "%.3fx" % (num / den)


def fmt_v(v, mark=""):
    if v is None:
        return "-"
    if not math.isfinite(v):
        return "%s%s" % (mark, v)
    return "%s%.4f" % (mark, v)


def fmt_x(by, x):
    if by == "tokens":
        if x >= 1e6:
            return "%.2fM" % (x / 1e6)
        if x >= 1e3:
            return "%.1fK" % (x / 1e3)
        return "%d" % x
    if by == "time_s":
        return "%.1f" % x
    return "%d" % x


def thin(xs, rows):
    if rows <= 0 or len(xs) <= rows:
        return xs
    idx = sorted({round(i * (len(xs) - 1) / (rows - 1))
                  for i in range(rows)}) if rows > 1 else [len(xs) - 1]
    return [xs[i] for i in idx]


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Markdown table of val bpb curves from metrics CSVs")
    ap.add_argument("csv", nargs="+", help="[LABEL=]path of a metrics CSV")
    ap.add_argument("--by", choices=("step", "tokens", "time_s"),
                    default="step", help="x axis (default step)")
    ap.add_argument("--baseline", default="",
                    help="label or 1-based index of the denominator of the "
                         "ratios (default: the last file)")
    ap.add_argument("--interp", action="store_true",
                    help="use the baseline's x values, interpolating others")
    ap.add_argument("--rows", type=int, default=20,
                    help="at most this many table rows (0 = all)")
    ap.add_argument("--tokens-per-step", default="",
                    help="comma-separated, one per file (0 = from the "
                         "'tokens' column): for files without 'tokens'")
    a = ap.parse_args(argv)
    if len(a.csv) < 2:
        ap.error("give two or more CSV files")

    tps = [int(float(t)) if t.strip() else 0
           for t in a.tokens_per_step.split(",")] if a.tokens_per_step else []
    if tps and len(tps) != len(a.csv):
        ap.error("--tokens-per-step needs one value per file")

    labels, curves = [], []
    for i, spec in enumerate(a.csv):
        if "=" in spec and not os.path.exists(spec):
            lab, path = spec.split("=", 1)
        else:
            lab, path = default_label(spec, labels), spec
        pts = load(path, tps[i] if tps else 0)
        if not pts:
            raise SystemExit("%s: no rows with a validation value" % path)
        if any(p[a.by] is None for p in pts):
            raise SystemExit("%s: no '%s' values (for tokens: give "
                             "--tokens-per-step)" % (path, a.by))
        labels.append(lab)
        curves.append(sorted((p[a.by], p["val_bpb"]) for p in pts))

    if a.baseline:
        if a.baseline.isdigit():
            bi = int(a.baseline) - 1
        elif a.baseline in labels:
            bi = labels.index(a.baseline)
        else:
            raise SystemExit("--baseline %s: no such label (%s)"
                             % (a.baseline, ", ".join(labels)))
        if not 0 <= bi < len(labels):
            raise SystemExit("--baseline index out of range")
    else:
        bi = len(labels) - 1
    others = [i for i in range(len(labels)) if i != bi]

    exact = [dict(c) for c in curves]
    common = sorted(set.intersection(*(set(d) for d in exact)))
    # wall-clock seconds never coincide: always interpolate on time_s
    use_interp = a.interp or len(common) < 2 or a.by == "time_s"
    if use_interp:
        lo = max(c[0][0] for c in curves)
        hi = min(c[-1][0] for c in curves)
        xs = [x for x, _ in curves[bi] if lo <= x <= hi]
        if not xs:
            raise SystemExit("the curves have no overlapping %s range" % a.by)
    else:
        xs = common
    xs = thin(xs, a.rows)

    xname = {"step": "step", "tokens": "predicted bytes",
             "time_s": "time (s)"}[a.by]
    out = []
    out.append("Validation bits per byte by %s%s; ratios are run / %s."
               % (xname, " (~ = interpolated)" if use_interp else "",
                  labels[bi]))
    out.append("")
    head = [xname] + labels + ["%s / %s" % (labels[i], labels[bi])
                               for i in others]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for x in xs:
        vals, marks = [], []
        for i, c in enumerate(curves):
            if x in exact[i]:
                vals.append(exact[i][x])
                marks.append("")
            else:
                vals.append(interp(c, x))
                marks.append("~")
        cells = [fmt_x(a.by, x)]
        for v, m in zip(vals, marks):
            cells.append(fmt_v(v, m))
        for i in others:
            cells.append(ratio(vals[i], vals[bi]))
        out.append("| " + " | ".join(cells) + " |")

    out.append("")
    out.append("| run | best val bpb | at %s | final val bpb | at %s | "
               "best / %s | final / %s |" % (xname, xname, labels[bi],
                                             labels[bi]))
    out.append("|---|---|---|---|---|---|---|")
    bestv = [min(c, key=lambda p: (p[1], p[0])) for c in curves]
    final = [c[-1] for c in curves]
    for i, lab in enumerate(labels):
        out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            lab, fmt_v(bestv[i][1]), fmt_x(a.by, bestv[i][0]),
            fmt_v(final[i][1]), fmt_x(a.by, final[i][0]),
            ratio(bestv[i][1], bestv[bi][1]),
            ratio(final[i][1], final[bi][1])))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
