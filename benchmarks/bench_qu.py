"""Query-understanding latency: the whole stage (normalize, tokenize, correct, NER, weigh,
intent) per query, on one core, over 10k real-looking queries.

    python benchmarks/bench_qu.py --index-dir var/demo/index [--queries var/sim/logs/sessions.jsonl] [--n 10000]
                                  [--ner-model var/models/ner.pt] [--intent-model var/models/intent.joblib]

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
from search.pipeline import SearchPipeline, clear_query_caches  # noqa: E402


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


def _time(pipe: SearchPipeline, queries: list[str]) -> dict[str, float]:
    for q in queries[:200]:
        pipe.understand(q)
    # The tokenizer memoizes short strings as in production; repeats follow the query mix.
    times = []
    for q in queries:
        t = time.perf_counter()
        pipe.understand(q)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"queries": len(times), "distinct": len(set(queries)), "p50_ms": round(statistics.median(times), 4),
            "p95_ms": round(times[int(0.95 * (len(times) - 1))], 4), "p99_ms": round(times[int(0.99 * (len(times) - 1))], 4),
            "mean_ms": round(sum(times) / len(times), 4)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index-dir", required=True)
    ap.add_argument("--queries", help="sessions.jsonl of a simulation")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--ner-model", help="trained NER tagger (adds the configurations with it)")
    ap.add_argument("--intent-model", help="intent classifier (adds the configurations with it)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "qu_latency.json"))
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)  # one core, as the target says
    except ImportError:
        pass
    queries = load_queries(args.queries, args.n)
    configs = {"default (dictionary NER)": {}}
    if args.ner_model:
        configs["+ NER tagger"] = {"ner_model": args.ner_model}
    if args.intent_model:
        configs["+ intent classifier"] = {"intent_model": args.intent_model}
    if args.ner_model and args.intent_model:
        configs["+ tagger + intent"] = {"ner_model": args.ner_model, "intent_model": args.intent_model}
    rows = {}
    print(f"{'configuration':<26} {'queries':>8} {'distinct':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, params in configs.items():
        clear_query_caches()  # every configuration starts cold; repeats within its 10k queries still hit
        pipe = SearchPipeline(load_config(None, {"engine": {"index_dir": args.index_dir}, "understanding": {"params": params}}))
        res = rows[name] = _time(pipe, queries)
        pipe.close()
        print(f"{name:<26} {res['queries']:>8} {res['distinct']:>9} {res['p50_ms']:>8} {res['p95_ms']:>8} {res['p99_ms']:>8} {res['mean_ms']:>8}",
              flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"→ {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
