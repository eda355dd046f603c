"""DPP greedy MAP benchmark: the fast Cholesky greedy (Chen et al. 2018) and its sliding
window against the naive greedy that recomputes log det(L_{Y∪i}) for every candidate at
every step (O(N·k³) per step), in the same run on the same kernel.

    python benchmarks/bench_dpp.py [--n 500] [--k 50] [--dims 64] [--window 10] [--repeats 5] [--seed 0]

The kernel is what the rerank stage builds: L = diag(r)·S·diag(r), S = cosine of random
64-d vectors (the LSA dimension) plus a same-song prior, r = exp(α(θ)·score). Prints a table
and writes benchmarks/results/dpp_<n>_<k>.json. The naive greedy runs once per repeat
too (it is the slow one); both must pick the same items, which the script checks.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ranking.dpp import dpp_kernel, greedy_map, greedy_map_window, naive_greedy_map, relevance_weights, similarity  # noqa: E402


def timed(fn, repeats: int) -> tuple[list[float], object]:
    out, ms = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ms.append((time.perf_counter() - t0) * 1000)
    return ms, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--theta", type=float, default=0.7)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--naive-repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blas-threads", type=int, default=1, help="BLAS threads (1 = as the rerank stage runs; 0 = library default)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.blas_threads > 0:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads, user_api="blas")  # the whole run: both algorithms alike

    rng = np.random.default_rng(args.seed)
    vecs = rng.normal(size=(args.n, args.dims)).astype(np.float32)
    songs = [str(x) for x in rng.integers(0, args.n // 4 or 1, args.n)]
    t0 = time.perf_counter()
    L = dpp_kernel(relevance_weights(np.sort(rng.random(args.n))[::-1], args.theta), similarity(vecs, [(songs, 0.3)]))
    kernel_ms = (time.perf_counter() - t0) * 1000

    rows = []
    fast_ms, (fast, _) = timed(lambda: greedy_map(L, args.k), args.repeats)
    win_ms, (win, _) = timed(lambda: greedy_map_window(L, args.k, args.window), args.repeats)
    naive_ms, (naive, _) = timed(lambda: naive_greedy_map(L, args.k), args.naive_repeats)
    naive_w_ms, (naive_w, _) = timed(lambda: naive_greedy_map(L, args.k, window=args.window), args.naive_repeats)
    if fast != naive or win != naive_w:
        print("ERROR: fast and naive greedy disagree", file=sys.stderr)
        return 1
    med_naive = statistics.median(naive_ms)
    med_naive_w = statistics.median(naive_w_ms)
    for name, ms, complexity, ref in [
        ("fast greedy (incremental Cholesky)", fast_ms, "O(N·k) per step", med_naive),
        (f"fast sliding window (w={args.window})", win_ms, "O(N·w) per step", med_naive_w),
        ("naive greedy (slogdet per candidate)", naive_ms, "O(N·k³) per step", med_naive),
        (f"naive sliding window (w={args.window})", naive_w_ms, "O(N·w³) per step", med_naive_w),
    ]:
        med = statistics.median(ms)
        rows.append({"algorithm": name, "complexity": complexity, "median_ms": round(med, 3), "min_ms": round(min(ms), 3),
                     "runs": len(ms), "speedup_vs_naive": round(ref / med, 1)})

    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"DPP greedy MAP, N={args.n}, k={args.k}, dims={args.dims} (kernel build {kernel_ms:.1f} ms, BLAS threads {args.blas_threads or 'default'}, {len(fast)} picked, same picks: yes)")
    for col in ("algorithm", "complexity", "median ms", "min ms", "runs", "speed-up vs naive"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["algorithm"], r["complexity"], f"{r['median_ms']:.2f}", f"{r['min_ms']:.2f}", str(r["runs"]), f"{r['speedup_vs_naive']}×")
    Console(width=150).print(t)

    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"dpp_{args.n}_{args.k}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"n": args.n, "k": args.k, "dims": args.dims, "window": args.window, "theta": args.theta, "seed": args.seed,
               "blas_threads": args.blas_threads or "default",
               "kernel_build_ms": round(kernel_ms, 3), "same_picks": True, "picked": len(fast), "rows": rows,
               "machine": {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
                           "platform": platform.platform()},
               "command": "python benchmarks/bench_dpp.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
