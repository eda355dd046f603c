"""Whole-pipeline quality on a judged set, for pipeline variants in the same run.

    python benchmarks/eval_variants.py --index-dir var/demo/index --judged var/sim/judged

Variants: BM25 text route only in engine order (the baseline), + rewrite and vector routes,
the full pipeline (relevance + ranking), and the full pipeline without each query-
understanding step (spelling correction, term weights, NER), and with the trained NER tagger
or intent classifier when given. Prints a table and writes
benchmarks/results/eval_variants.json. Per-intent NDCG@10 is included, because QU steps
matter for some query types (typos, aliases) and not others.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.config import load_config  # noqa: E402
from search.evaluation import evaluate_search, load_judgements, read_jsonl  # noqa: E402
from search.pipeline import SearchPipeline  # noqa: E402

OFF = {"enabled": False}
VARIANTS = {
    "bm25 text route only": {"recall": {"routes": {"rewrite": OFF, "vector": OFF}}, "relevance": OFF, "ranking": OFF,
                             "understanding": {"params": {"correction": False, "term_weights": False}}},
    "+ rewrite + vector routes": {"relevance": OFF, "ranking": OFF},
    "full pipeline": {},
    "full − spelling correction": {"understanding": {"params": {"correction": False}}},
    "full + required entity terms": {"understanding": {"params": {"require_entities": True}}},
    "full − term weights": {"understanding": {"params": {"term_weights": False}}},
    "full − NER": {"understanding": {"params": {"ner": False}}},
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index-dir", required=True)
    ap.add_argument("--judged", required=True, help="directory with queries.jsonl and qrels.jsonl")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_variants.json"))
    ap.add_argument("--ner-model", help="trained NER tagger: adds the variant 'full + NER tagger' (ensemble)")
    ap.add_argument("--intent-model", help="intent classifier: adds the variant 'full + intent'")
    ap.add_argument("--only", nargs="*", help="run only these variants")
    args = ap.parse_args()
    if args.ner_model:
        VARIANTS["full + NER tagger"] = {"understanding": {"params": {"ner_model": args.ner_model}}}
    if args.intent_model:
        VARIANTS["full + intent"] = {"understanding": {"params": {"intent_model": args.intent_model}}}
    judged = Path(args.judged)
    queries, qrels = load_judgements(judged / "queries.jsonl", judged / "qrels.jsonl")
    intent_of = {str(r["qid"]): r.get("intent", "?") for r in read_jsonl(judged / "queries.jsonl")}
    rows = {}
    for name, over in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        cfg = load_config(None, {"engine": {"kind": "embedded", "index_dir": args.index_dir}, **over})
        pipe = SearchPipeline(cfg)
        rep = evaluate_search(pipe, queries, qrels, progress=False)
        pipe.close()
        per_intent = defaultdict(list)
        for q in rep.per_query:
            per_intent[intent_of.get(q["qid"], "?")].append(q["ndcg@10"])
        rows[name] = {**rep.summary(), "ndcg10_by_intent": {k: round(sum(v) / len(v), 4) for k, v in sorted(per_intent.items())}}
        print(f"{name:<30} " + "  ".join(f"{k} {rows[name][k]}" for k in ("NDCG@10", "NDCG@20", "Recall@100", "MRR", "AUC(3,2 vs 0)")), flush=True)
    intents = sorted({k for r in rows.values() for k in r["ndcg10_by_intent"]})
    print("\nNDCG@10 by intent: " + " | ".join(intents))
    for name, r in rows.items():
        print(f"{name:<30} " + " | ".join(f"{r['ndcg10_by_intent'].get(i, 0):.3f}" for i in intents))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"index_dir": args.index_dir, "judged": str(judged), "variants": rows}, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(out)
    print(f"→ {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
