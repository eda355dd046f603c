"""The article's relevance table (seed 002 §2: AUC of text relevance, click graph cos / KL, the
aspect model before/after fine-tuning, the ensemble) on a labelled set, from one command, followed
by the QBQTC figures of `mvsearch eval qbqtc` when its results file exists:

    python benchmarks/relevance_table.py --labels /tmp/sim1m3/judged/relevance_pairs.jsonl \
        --index-dir /tmp/demo7/index --click-graph-model var/models/click_graph.npz \
        --ensemble-model var/models/relevance_ensemble.joblib --logs /tmp/sim1m3/logs/impressions.jsonl \
        [--scorer-param aspect.model=DIR --scorer-param aspect_ft.model=DIR] [--split heldout] [--out DIR]

Default split is `heldout`: the queries NOT used to fit the ensemble or to pick the click-graph
iteration (same hash split and seed as the training commands). A scorer that cannot be built
(model not trained, not registered) is listed as "not available" instead of failing the table.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS = [("text relevance", "text"), ("BM25 alone", "bm25"), ("click graph (cosine)", "click_graph_cos"),
        ("click graph (KL)", "click_graph_kl"), ("aspect model", "aspect"), ("aspect model, fine-tuned", "aspect_ft"),
        ("ensemble", "ensemble")]


def main(argv: list[str] | None = None) -> int:
    from search.cli import _engine_args

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", required=True)
    p.add_argument("--split", choices=["all", "fit", "heldout"], default="heldout")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--logs", help="impressions JSONL for head/torso/tail bands")
    p.add_argument("--click-graph-model")
    p.add_argument("--ensemble-model")
    p.add_argument("--scorer-param", action="append", help="NAME.KEY=VALUE, e.g. aspect.model=DIR")
    p.add_argument("--out", help="also write report.md / report.json / roc.png here")
    p.add_argument("--qbqtc-results", default=str(Path(__file__).resolve().parent / "results" / "qbqtc.json"),
                   help="QBQTC results of `mvsearch eval qbqtc` (part B), shown under the table if the file exists")
    _engine_args(p)
    args = p.parse_args(argv)

    from relevance.commands import _context
    from relevance.evaluation import evaluate_relevance, load_labels, select_split, write_report

    pairs = select_split(load_labels(args.labels), args.split, args.seed)
    ctx = _context(args)
    rep = evaluate_relevance(pairs, [n for _, n in ROWS], ctx, labels_name=args.labels,
                             split=args.split if args.split == "all" else f"{args.split} (seed {args.seed})", logs=args.logs,
                             progress=False)
    by = {r.name: r for r in rep.results}
    f = lambda x: "–" if x is None else f"{x:.4f}"  # noqa: E731
    print(f"Relevance AUC (grades 3,2 vs 0) on {args.labels}, split {rep.split}: {rep.pairs} pairs, {rep.queries} queries")
    print()
    print("| model | AUC | pairwise acc (4 grades) | head | torso | tail |")
    print("|---|---|---|---|---|---|")
    for label, name in ROWS:
        r = by[name]
        if not r.available:
            print(f"| {label} | not available | | | | |")
        else:
            print(f"| {label} | {f(r.auc)} | {f(r.pairwise)} | {f(r.by_band.get('head'))} | {f(r.by_band.get('torso'))} | {f(r.by_band.get('tail'))} |")
    print()
    print(f"frequency bands from {rep.band_source}")
    for r in rep.results:
        if not r.available:
            print(f"not available: {r.name}: {r.reason}")
    qb = Path(args.qbqtc_results) if args.qbqtc_results else None
    if qb is not None and qb.exists():
        import json

        res = json.loads(qb.read_text(encoding="utf-8"))
        print()
        print(f"QBQTC held-out ({res.get('pairs', {}).get('heldout', '?')} pairs, {res.get('split', '')}; from {qb}, "
              f"made by `mvsearch eval qbqtc`):")
        print()
        print("| model | accuracy | macro-F1 | AUC (2,1 vs 0) |")
        print("|---|---|---|---|")
        for name, r in res.get("results", {}).items():
            print(f"| {name} | {f(r.get('accuracy'))} | {f(r.get('macro_f1'))} | {f(r.get('auc_21_vs_0'))} |")
        for name, pub in (res.get("published") or {}).items():
            print(f"| {name}, published (not our split) | {f(pub.get('accuracy'))} | {f(pub.get('macro_f1'))} | – |")
    if args.out:
        cmd = "python benchmarks/relevance_table.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        paths = write_report(rep, args.out, cmd)
        print("report → " + ", ".join(str(x) for x in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
