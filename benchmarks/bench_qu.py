"""Query-understanding latency: the whole stage (normalize, tokenize, correct, weigh) per
query, on one core, over 10k real-looking queries.

    python benchmarks/bench_qu.py --index-dir var/demo/index [--queries var/sim/logs/sessions.jsonl] [--n 10000]

Queries: the typed queries of a simulation's sessions (noise included) when given, else
noisy queries generated from the knowledge base, plus real VSQ music queries when
../shared/data is present. Prints a table and writes benchmarks/results/qu_latency.json.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.config import load_config  # noqa: E402
from search.pipeline import SearchPipeline  # noqa: E402


def load_queries(sessions: str | None, n: int) -> list[str]:
    qs: list[str] = []
    if sessions:
        for line in open(sessions, encoding="utf-8"):
            qs += [q["query"] for q in json.loads(line)["queries"]]
    vsq = ROOT.parent / "shared" / "data" / "queries" / "vsq" / "train.txt"
    if vsq.exists():
        qs += [l.split("\t", 1)[1] for l in vsq.read_text(encoding="utf-8").splitlines() if l.startswith("20\t")]
    if not qs:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_search import sample_queries

        qs = sample_queries(n)
    rng = random.Random(0)
    return [rng.choice(qs) for _ in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index-dir", required=True)
    ap.add_argument("--queries", help="sessions.jsonl of a simulation")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "qu_latency.json"))
    args = ap.parse_args()
    pipe = SearchPipeline(load_config(None, {"engine": {"index_dir": args.index_dir}}))
    queries = load_queries(args.queries, args.n)
    for q in queries[:200]:
        pipe.understand(q)
    # The tokenizer memoizes short strings as in production; repeats follow the query mix.
    times = []
    for q in queries:
        t = time.perf_counter()
        pipe.understand(q)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    res = {"queries": len(times), "distinct": len(set(queries)), "p50_ms": round(statistics.median(times), 4),
           "p95_ms": round(times[int(0.95 * (len(times) - 1))], 4), "p99_ms": round(times[int(0.99 * (len(times) - 1))], 4),
           "mean_ms": round(sum(times) / len(times), 4)}
    print(f"{'queries':>8} {'distinct':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    print(f"{res['queries']:>8} {res['distinct']:>9} {res['p50_ms']:>8} {res['p95_ms']:>8} {res['p99_ms']:>8} {res['mean_ms']:>8}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1), encoding="utf-8")
    print(f"→ {out}")
    pipe.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
