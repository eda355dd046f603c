"""Relevance commands (part A): `mvsearch eval relevance`, `mvsearch relevance click-graph
train|synonyms`, `mvsearch relevance train-ensemble`. Wired in by `relevance/cli.py`."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from .scorers import available_scorers


def _parse_scorer_params(items: list[str] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for it in items or []:
        if "=" not in it or "." not in it.split("=", 1)[0]:
            raise ValueError(f"--scorer-param {it!r}: use NAME.KEY=VALUE, e.g. aspect.model=var/aspect.pt")
        k, v = it.split("=", 1)
        name, key = k.split(".", 1)
        out.setdefault(name, {})[key] = v
    return out


def _context(args: argparse.Namespace) -> Any:
    from search.cli import _config_from

    from .evaluation import context_from_config

    params = _parse_scorer_params(getattr(args, "scorer_param", None))
    if getattr(args, "click_graph_model", None):
        params.setdefault("click_graph", {})["model"] = args.click_graph_model
    if getattr(args, "ensemble_model", None):
        params.setdefault("ensemble", {})["model"] = args.ensemble_model
    return context_from_config(_config_from(args), params)


def cmd_eval_relevance(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_relevance, load_labels, select_split, write_report

    names = args.scorer or ["text"]
    pairs = select_split(load_labels(args.labels), args.split, args.seed)
    if not pairs:
        raise ValueError(f"no labelled pairs in split {args.split}")
    ctx = _context(args)
    rep = evaluate_relevance(pairs, names, ctx, labels_name=str(args.labels), split=args.split if args.split == "all" else
                             f"{args.split} (queries hashed with seed {args.seed})", logs=args.logs, progress=not args.json)
    command = "mvsearch " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and "mvsearch" in sys.argv[0] else ""
    paths = write_report(rep, args.out, command) if args.out else {}
    if args.json:
        print(json.dumps(rep.to_json(), ensure_ascii=False, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    rows = rep.table_rows()
    con = Console(width=max(120, Console().width))
    # two tables: the main figures, then AUC per intent (too wide for one terminal line)
    for title, cols in ((f"eval relevance: {rep.pairs} pairs, {rep.queries} queries, split {rep.split}", range(0, 6)),
                        ("AUC by intent", [0] + list(range(6, len(rows[0]))))):
        if len(cols) < 2:
            continue
        t = Table(title=title)
        for c in cols:
            t.add_column(rows[0][c])
        for r in rows[1:]:
            t.add_row(*(r[c] for c in cols))
        con.print(t)
    con.print(f"frequency bands from {rep.band_source}")
    for r in rep.results:
        if not r.available:
            con.print(f"[yellow]{r.name} not available:[/] {r.reason}")
    if paths:
        con.print("report → " + ", ".join(str(p) for p in paths.values()))
    return 0


def _selection_pairs(args: argparse.Namespace) -> list[Any]:
    from .evaluation import load_labels, select_split

    return select_split(load_labels(args.labels), "fit", args.seed)


def cmd_click_graph_train(args: argparse.Namespace) -> int:
    import numpy as np

    from query_understanding.tokenize import get_tokenizer

    from .click_graph import ClickGraphConfig, train_click_graph
    from .evaluation import article_auc

    ctx = _context(args)
    tok = get_tokenizer(ctx.bundle_dir / "dictionary.txt")
    select = None
    if args.labels:
        sel, queries, doc_list = ctx.pair_inputs(_selection_pairs(args))
        grades = np.array([p.grade for p in sel])

        def select(model: Any, it: int) -> float:
            cos, _ = model.score_pairs(queries, doc_list)
            return article_auc(grades, cos) or 0.0

        print(f"iteration chosen by AUC (cosine) on {len(sel)} pairs of the fit split of {args.labels} (seed {args.seed})")
    cfg = ClickGraphConfig(iterations=args.iterations, top_words=args.top_words, ctr_prior_strength=args.prior)
    model, history = train_click_graph(args.logs, tok.tokenize, ctx.get_docs, select, cfg, progress=not args.quiet)
    from search.documents import DocStore

    store = DocStore(ctx.bundle_dir / "docstore.sqlite")
    ids = list(store.iter_ids())
    added = 0
    for i in range(0, len(ids), 2000):  # item vectors precomputed for the whole catalog
        docs = store.get_many(ids[i : i + 2000])
        chunk = [v for v in ids[i : i + 2000] if v in docs]
        added += model.add_catalog_videos(chunk, [docs[v].get("_fields", {}).get("title", []) for v in chunk])
    store.close()
    model.meta["catalog_videos_added"] = added
    model.meta["labels"] = str(args.labels or "")
    model.meta["selection"] = f"fit split, seed {args.seed}" if args.labels else "last iteration (no labels)"
    path = model.save(args.out)
    for h in history:
        print(f"  iteration {h['iteration']}: selection AUC {h['selection_auc']}")
    m = model.meta
    print(f"click graph: {m['queries']} queries × {m['videos']} videos, {m['edges']} edges, vocab {m['vocab']}; "
          f"kept iteration {m['iteration']} → {path}")
    return 0


def cmd_click_graph_synonyms(args: argparse.Namespace) -> int:
    from search.annotation.export import write_atomic

    from .click_graph import ClickGraphModel, synonym_candidates

    model = ClickGraphModel.load(args.model)
    rows = synonym_candidates(model, top=args.top, per_word=args.per_word, min_weight=args.min_weight, min_queries=args.min_queries)
    text = "word\tcandidate\tweight\tqueries\n" + "".join(f"{a}\t{b}\t{w}\t{n}\n" for a, b, w, n in rows)
    write_atomic(args.out, text)
    print(f"{len(rows)} synonym candidates (for review) → {args.out}")
    for a, b, w, n in rows[:10]:
        print(f"  {a} → {b}\t{w}\t({n} queries)")
    return 0


def cmd_train_ensemble(args: argparse.Namespace) -> int:
    import numpy as np

    from datetime import datetime, timezone

    from .ensemble import EnsembleFeatures, EnsembleModel, fit_ensemble
    from .evaluation import article_auc, load_labels, select_split

    ctx = _context(args)
    scorers = args.scorers or ["text", "click_graph_cos", "click_graph_kl"]
    feats = EnsembleFeatures(scorers, ctx)
    # several labelled sets may be combined (same qids = same split); a (qid, video) pair counts once
    seen: set[tuple[str, str]] = set()
    all_pairs = []
    for path in args.labels:
        for p in load_labels(path):
            if (p.qid, p.video_id) not in seen:
                seen.add((p.qid, p.video_id))
                all_pairs.append(p)

    def matrix(pairs: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        pairs, qs, docs = ctx.pair_inputs(pairs)
        return feats.matrix(qs, docs), np.array([p.grade for p in pairs])

    Xf, yf = matrix(select_split(all_pairs, "fit", args.seed))
    Xh, yh = matrix(select_split(all_pairs, "heldout", args.seed))
    est = fit_ensemble(Xf, yf, args.kind, args.seed)
    cg = ctx.scorer_params("click_graph").get("model", "")
    # model paths of the component scorers, so the ensemble finds them again (lowest priority)
    saved_params = {n: {k: (str(Path(v).resolve()) if k == "model" and Path(str(v)).exists() else v) for k, v in d.items()}
                    for n, d in ctx.params.items() if n in scorers or n == "click_graph"}
    model = EnsembleModel(scorers, feats.names, est, args.kind,
                          {"labels": [str(x) for x in args.labels], "split_seed": args.seed, "fit_pairs": int(len(yf)), "heldout_pairs": int(len(yh)),
                           "click_graph_model": str(Path(cg).resolve()) if cg else "", "scorer_params": saved_params,
                           "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    score, grade, _ = model.predict(Xh)
    auc = article_auc(yh, score)
    acc = float((grade == yh).mean()) if len(yh) else float("nan")
    model.meta.update(heldout_auc=auc, heldout_grade_accuracy=acc)
    path = model.save(args.out)
    print(f"ensemble ({args.kind}) on {len(yf)} pairs of the fit split; held-out ({len(yh)} pairs, unseen queries): "
          f"AUC {auc:.4f}, 4-grade accuracy {acc:.4f} → {path}")
    print(f"features: {', '.join(feats.names)}")
    return 0


def cmd_split_labels(args: argparse.Namespace) -> int:
    """Writes the rows of one fixed split (by qid hash) of any JSONL with a qid field, e.g. the
    held-out queries/qrels for `mvsearch eval search` after fitting on the other split."""
    from search.annotation.export import write_atomic

    from .evaluation import split_of

    n = kept = 0
    lines = []
    with open(args.input, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            n += 1
            r = json.loads(line)
            if "qid" not in r:
                raise ValueError(f"{args.input}: a row without qid")
            if split_of(str(r["qid"]), args.seed) == args.split:
                lines.append(line if line.endswith("\n") else line + "\n")
                kept += 1
    write_atomic(args.out, "".join(lines))
    print(f"{kept} of {n} rows in split {args.split} (seed {args.seed}) → {args.out}")
    return 0


def add_relevance_commands(sub: argparse._SubParsersAction, eval_sub: argparse._SubParsersAction,
                           engine_args: Callable[[argparse.ArgumentParser], None]) -> argparse._SubParsersAction:
    """Adds part A's commands; returns the `mvsearch relevance …` subparsers for further commands."""
    e = eval_sub.add_parser("relevance", help="AUC / pairwise accuracy of relevance scorers on a labelled set (report.md/json, roc.png)")
    e.add_argument("--labels", required=True, help='labelled pairs JSONL: {"qid","query","video_id","grade"[,"intent"]} (annotation exports too)')
    e.add_argument("--scorer", action="append", help=f"scorer name, repeatable (default text); known: {', '.join(available_scorers())}")
    e.add_argument("--out", help="report directory (report.md, report.json, roc.png)")
    e.add_argument("--logs", help="search log (impressions JSONL) for query-frequency bands; default: the labels' own counts")
    e.add_argument("--split", choices=["all", "fit", "heldout"], default="all",
                   help="evaluate on all pairs, or on the queries of one fixed split (heldout = not used to fit the ensemble / pick the click-graph iteration)")
    e.add_argument("--seed", type=int, default=7, help="split seed (same as train-ensemble / click-graph train)")
    e.add_argument("--click-graph-model", help="click-graph model (.npz) for click_graph_cos / click_graph_kl")
    e.add_argument("--ensemble-model", help="ensemble model (joblib) for the ensemble scorer")
    e.add_argument("--scorer-param", action="append", help="NAME.KEY=VALUE passed to a scorer factory (e.g. aspect.model=PATH)")
    e.add_argument("--json", action="store_true")
    engine_args(e)
    e.set_defaults(func=cmd_eval_relevance)

    rel = sub.add_parser("relevance", help="relevance models: click graph, ensemble, aspect model")
    rsub = rel.add_subparsers(dest="sub", required=True)
    cg = rsub.add_parser("click-graph", help="click-graph model (Jiang et al. 2016)").add_subparsers(dest="cg_sub", required=True)
    t = cg.add_parser("train", help="build the query–video click graph from the train split and propagate word bags")
    t.add_argument("--logs", required=True, help="impressions JSONL (only split=train is used)")
    t.add_argument("--labels", help="labelled pairs: the iteration with the best AUC on their fit split is kept")
    t.add_argument("--out", required=True, help="model file (.npz)")
    t.add_argument("--iterations", type=int, default=10)
    t.add_argument("--top-words", type=int, default=20)
    t.add_argument("--prior", type=float, default=20.0, help="CTR smoothing: pseudo-impressions at the global CTR")
    t.add_argument("--seed", type=int, default=7, help="split seed for --labels")
    t.add_argument("--quiet", action="store_true")
    engine_args(t)
    t.set_defaults(func=cmd_click_graph_train)
    s = cg.add_parser("synonyms", help="export the strongest query-side word associations as synonym candidates (TSV, for review)")
    s.add_argument("--model", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--top", type=int, default=500)
    s.add_argument("--per-word", type=int, default=5)
    s.add_argument("--min-weight", type=float, default=0.2)
    s.add_argument("--min-queries", type=int, default=2, help="a word must occur in this many training queries")
    s.set_defaults(func=cmd_click_graph_synonyms)

    te = rsub.add_parser("train-ensemble", help="fit the relevance ensemble on the fit split of a labelled set")
    te.add_argument("--labels", required=True, nargs="+", help="labelled set(s); fitted on their fit-split queries only")
    te.add_argument("--out", required=True, help="model file (joblib); set as [relevance.params] model")
    te.add_argument("--scorers", nargs="+", help="component scorers (default: text click_graph_cos click_graph_kl)")
    te.add_argument("--kind", choices=["lr", "hgb"], default="lr")
    te.add_argument("--seed", type=int, default=7, help="split seed")
    te.add_argument("--click-graph-model")
    te.add_argument("--scorer-param", action="append", help="NAME.KEY=VALUE passed to a scorer factory")
    engine_args(te)
    te.set_defaults(func=cmd_train_ensemble)

    sp = rsub.add_parser("split-labels", help="keep the rows of one fixed query split (fit / heldout) of a qid-keyed JSONL")
    sp.add_argument("--input", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--split", choices=["fit", "heldout"], default="heldout")
    sp.add_argument("--seed", type=int, default=7)
    sp.set_defaults(func=cmd_split_labels)
    return rsub
