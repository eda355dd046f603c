"""Latency of the configured relevance stage inside the pipeline (all recalled candidates of a
query, typically 300-500), per query, as the stage reports it in `stages["relevance"]["ms"]`.

    python benchmarks/relevance_stage_latency.py --config CONFIG.toml --queries-file /tmp/sim1m3/judged/queries.jsonl [--limit 200]

Use it to compare `[relevance] impl = "text"` with `impl = "ensemble"` on one core
(OMP/MKL threads are limited to 1 here). The first query is a warm-up and not counted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from search.cli import _config_from, _engine_args
    from search.pipeline import SearchPipeline, SearchRequest

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries-file", required=True, help='JSONL with a "query" field')
    ap.add_argument("--limit", type=int, default=200)
    _engine_args(ap)
    args = ap.parse_args(argv)
    queries = [json.loads(l)["query"] for l in open(args.queries_file, encoding="utf-8") if l.strip()][: args.limit + 1]
    pipe = SearchPipeline(_config_from(args))
    ms, n_cands, warnings = [], [], 0
    try:
        for i, q in enumerate(queries):
            res = pipe.search(SearchRequest(q, size=10))
            st = res.stages.get("relevance", {})
            warnings += bool(res.warnings)
            if i == 0 or "ms" not in st:
                continue
            ms.append(float(st["ms"]))
            n_cands.append(res.total)
    finally:
        pipe.close()
    if not ms:
        print("no timed queries (relevance stage disabled or failing?)")
        return 1
    ms_sorted = sorted(ms)
    impl = pipe.config.get("relevance", {}).get("impl")
    print(f"relevance stage {impl!r}: {len(ms)} queries, candidates per query median {statistics.median(n_cands):.0f} "
          f"(max {max(n_cands)}); ms median {statistics.median(ms):.2f}, p95 {ms_sorted[int(0.95 * (len(ms) - 1))]:.2f}, "
          f"max {ms_sorted[-1]:.2f}; responses with warnings: {warnings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
