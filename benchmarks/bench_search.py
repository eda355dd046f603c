"""Search-path benchmark: index build time and per-stage query latency on the demo catalog.

    python benchmarks/bench_search.py [--size 20000] [--queries 1000] [--engine embedded|elasticsearch --es-url URL]

Prints a table and writes benchmarks/results/search_<engine>_<size>.json. Queries are
drawn from the knowledge base (artist, song, artist+song, alias/English/pinyin, show,
version words), the shapes users type; the same seed gives the same queries.
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
from search.demo_catalog import write_demo_catalog  # noqa: E402
from search.indexer import CURRENT, build_index  # noqa: E402
from search.kb import load_kb  # noqa: E402
from search.pipeline import SearchPipeline, SearchRequest  # noqa: E402

VERSIONS = ["live", "翻唱", "mv", "伴奏", "舞蹈", "教学", "现场", "cover", "纯享", "直拍"]


def sample_queries(n: int, seed: int = 1) -> list[str]:
    kb = load_kb()
    rng = random.Random(seed)
    top = kb.artists[:400]
    out = []
    for _ in range(n):
        a = rng.choice(top)
        songs = kb.songs_by_artist.get(a["name"], [])
        s = rng.choice(songs)["title"] if songs else a["name"]
        r = rng.random()
        if r < 0.25:
            out.append(a["name"])
        elif r < 0.45:
            out.append(s)
        elif r < 0.7:
            out.append(f"{a['name']} {s}")
        elif r < 0.8 and kb.aliases_of(a["name"]):
            out.append(rng.choice(kb.aliases_of(a["name"])))
        elif r < 0.9:
            out.append(f"{s} {rng.choice(VERSIONS)}")
        elif kb.shows:
            out.append(rng.choice(kb.shows)["name"])
        else:
            out.append(a["name"])
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--engine", default="embedded", choices=["embedded", "elasticsearch"])
    ap.add_argument("--es-url")
    ap.add_argument("--workdir", default=str(ROOT / "var" / "bench"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    work = Path(args.workdir) / f"{args.size}"
    catalog = work / "docs.jsonl"
    t0 = time.time()
    if not catalog.exists():
        write_demo_catalog(catalog, size=args.size, seed=7)
    gen_s = time.time() - t0
    index_dir = work / f"index_{args.engine}"
    res = build_index(catalog, index_dir, engine=args.engine, es_url=args.es_url, es_index=f"bench_{args.size}", show_progress=True)
    cfg = load_config(None, {"engine": {"kind": args.engine, "index_dir": str(index_dir), "es_url": args.es_url or "",
                                        "es_index": f"bench_{args.size}"}})
    pipe = SearchPipeline(cfg)
    queries = sample_queries(args.queries)
    for q in queries[:50]:  # warm caches (jieba, faiss, page cache)
        pipe.search(SearchRequest(q))
    total, stages = [], {k: [] for k in ("understanding", "text", "rewrite", "vector", "relevance", "ranking")}
    for q in queries:
        t = time.perf_counter()
        r = pipe.search(SearchRequest(q))
        total.append((time.perf_counter() - t) * 1000)
        st = r.stages
        stages["understanding"].append(st["understanding"].get("ms", 0.0))
        for route in ("text", "rewrite", "vector"):
            stages[route].append(st.get("recall", {}).get("routes", {}).get(route, {}).get("ms", 0.0))
        for k in ("relevance", "ranking"):
            stages[k].append(st.get(k, {}).get("ms", 0.0))
    pipe.close()
    rows = [("end to end", total)] + [(k, v) for k, v in stages.items()]
    result = {"engine": args.engine, "catalog_size": args.size, "queries": len(queries), "catalog_gen_s": round(gen_s, 1),
              "index_build_s": round(res.seconds, 1), "index_docs_per_s": round(res.docs / res.seconds, 1),
              "latency_ms": {name: {"p50": round(statistics.median(v), 2), "p95": round(pct(v, 95), 2), "p99": round(pct(v, 99), 2)}
                             for name, v in rows}}
    print(f"engine={args.engine} catalog={args.size} queries={len(queries)} index build {res.seconds:.1f}s "
          f"({result['index_docs_per_s']} docs/s)")
    print(f"{'stage':<14}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for name, v in rows:
        lat = result["latency_ms"][name]
        print(f"{name:<14}{lat['p50']:>9}{lat['p95']:>9}{lat['p99']:>9}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"search_{args.engine}_{args.size}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)
    print(f"→ {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
