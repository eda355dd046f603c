"""Commands of this stage, added to `mvsearch` by search/cli.py (STAGE_COMMANDS):

  mvsearch expansion pretrain          small BERT: vocabulary + MLM pretraining
  mvsearch expansion train-two-tower   EBR-style query/video towers on click logs
  mvsearch expansion build-rewrites    rewrite candidates → discriminator → versioned rewrite table
  mvsearch eval recall                 Recall@100/@500 per route and for the union
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

DEFAULT_BERT_DIR = "var/models/bert-small"
DEFAULT_TWO_TOWER_DIR = "var/models/two-tower"
DEFAULT_DISCRIMINATOR_DIR = "var/models/rewrite-discriminator"


def _shared_default() -> str:
    return os.environ.get("MVSEARCH_SHARED_DATA", "../shared/data")


def _model_dir(args: argparse.Namespace, key: str) -> str:
    """A model directory: the command-line value, else `[expansion] <key>` of the config."""
    from search.config import load_config

    val = getattr(args, key, None)
    if val:
        return val
    return str(load_config(getattr(args, "config", None)).get("expansion", {}).get(key) or "")


def _train_args(p: argparse.ArgumentParser, steps: int, lr: float, ckpt: int = 200) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=steps)
    g.add_argument("--lr", type=float, default=lr)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared: 1 by default)")
    g.add_argument("--checkpoint-every", type=int, default=ckpt)
    g.add_argument("--no-resume", action="store_true", help="start over instead of resuming from the last checkpoint")
    g.add_argument("--no-progress", action="store_true")


def _train_cfg(args: argparse.Namespace):
    from .trainer import TrainConfig

    return TrainConfig(steps=args.steps, lr=args.lr, seed=args.seed, threads=args.threads,
                       checkpoint_every=args.checkpoint_every, show_progress=not args.no_progress)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .bert import BertSize, pretrain
    from .corpus import CorpusReport, pretraining_corpus

    shared = Path(args.data) if args.data else None
    if shared is not None and not shared.is_dir():
        print(f"shared data directory not found: {shared} (pass --data DIR, or --no-shared-data)", file=sys.stderr)
        return 2
    rep = CorpusReport()
    lines = pretraining_corpus(args.catalog, shared, args.sessions, rep, max_lines=args.max_lines)
    print(f"pretraining corpus: {len(lines)} lines " + json.dumps(rep.lines_by_source, ensure_ascii=False))
    for m in rep.missing:
        print(f"  missing source (skipped): {m}", file=sys.stderr)
    size = BertSize(vocab_size=args.vocab_size, layers=args.layers, hidden=args.hidden, heads=args.heads,
                    intermediate=args.hidden * 4, max_len=args.max_len)
    args.out = _model_dir(args, "bert_dir")
    report = pretrain(lines, args.out, size, _train_cfg(args), batch_size=args.batch_size, resume=not args.no_resume,
                      corpus_report={"lines_by_source": rep.lines_by_source, "missing": rep.missing})
    h = report["history"]
    print(f"saved {args.out}: {h['steps_run']} steps in {h['seconds']}s ({h['steps_per_s']} steps/s), "
          f"last loss {h['loss'][-1][1] if h['loss'] else 'n/a'}, held-out masked-token accuracy {report['heldout_masked_accuracy']}")
    return 0


def _catalog_video_texts(catalog: str) -> dict[str, str]:
    from .two_tower import video_text_from_record

    out: dict[str, str] = {}
    with open(catalog, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "video_id" in r:
                out[r["video_id"]] = video_text_from_record(r)
    return out


def cmd_train_two_tower(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from .two_tower import (TwoTowerConfig, TwoTowerEmbedder, mine_text_recall_negatives, read_clicks,
                            retrieval_recall, train_two_tower)

    for label, path in (("impressions", args.impressions), ("catalog", args.catalog)):
        if not Path(path).exists():
            print(f"{label} not found: {path}", file=sys.stderr)
            return 2
    t0 = time.time()
    clicks = read_clicks(args.impressions, "train")
    print(f"read {len(clicks.pairs)} clicked pairs, log-mined hard negatives for {len(clicks.hard)} queries ({time.time() - t0:.0f}s)")
    if args.index_dir and args.mine_queries > 0:
        t1 = time.time()
        qs = sorted(clicks.clicked)
        rng = np.random.default_rng(args.seed)
        pick = [qs[i] for i in rng.choice(len(qs), size=min(args.mine_queries, len(qs)), replace=False)]
        mined = mine_text_recall_negatives(args.index_dir, pick, clicks.clicked)
        for q, vs in mined.items():  # engine-mined first: ranks 11-100 of text recall, not clicked
            clicks.hard[q] = list(dict.fromkeys(vs + clicks.hard.get(q, [])))
        print(f"mined text-recall hard negatives for {len(mined)} queries ({time.time() - t1:.0f}s)")
    texts = _catalog_video_texts(args.catalog)
    cfg = TwoTowerConfig(dims=args.dims, batch_size=args.batch_size, temperature=args.temperature, hard_per_query=args.hard_per_query)
    args.bert_dir, args.out = _model_dir(args, "bert_dir"), _model_dir(args, "two_tower_dir")
    meta = train_two_tower(clicks, texts, args.bert_dir or None, args.out, cfg, _train_cfg(args), resume=not args.no_resume)
    h = meta["history"]
    print(f"saved {args.out}: {h['steps_run']} steps in {h['seconds']}s, last loss {h['loss'][-1][1] if h['loss'] else 'n/a'}")
    # held-out: validation-split clicks, retrieval over the whole catalog
    emb = TwoTowerEmbedder.load(args.out)
    val = read_clicks(args.impressions, "validation")
    vids = sorted(texts)
    pos = {v: i for i, v in enumerate(vids)}
    vq = sorted(val.clicked)[: args.eval_queries]
    targets = [{pos[v] for v in val.clicked[q] if v in pos} for q in vq]
    vv = emb.encode_videos([texts[v] for v in vids])
    res = {"two_tower": retrieval_recall(emb.encode_queries(vq), vv, targets)}
    if args.index_dir:
        res["lsa"] = _lsa_recall(args.index_dir, vq, vids, targets)
    lat = []
    for q in vq[:2000]:
        t = time.perf_counter()
        emb.encode_query(q)
        lat.append((time.perf_counter() - t) * 1000)
    res["query_vector_ms"] = {"p50": round(float(np.percentile(lat, 50)), 3), "p99": round(float(np.percentile(lat, 99)), 3),
                              "max": round(float(np.max(lat)), 3), "n": len(lat)}
    res["validation_queries"] = len(vq)
    print(json.dumps(res, ensure_ascii=False, indent=1))
    meta["validation"] = res
    from .two_tower import _write_json_atomic

    _write_json_atomic(Path(args.out) / "train_report.json", meta)
    return 0


def _lsa_recall(index_dir: str, queries: list[str], vids: list[str], targets: list[set[int]]) -> dict[str, float]:
    """The LSA baseline on the same held-out clicks (the bundle's own embedder and fields)."""
    import numpy as np

    from query_understanding.tokenize import Tokenizer
    from search.documents import embedding_tokens
    from search.embedder import LsaEmbedder
    from search.indexer import current_bundle

    from .two_tower import retrieval_recall

    b = current_bundle(index_dir)
    lsa = LsaEmbedder.load(b / "embedder.npz")
    tok = Tokenizer(b / "dictionary.txt")
    import sqlite3

    conn = sqlite3.connect(f"file:{b / 'docstore.sqlite'}?mode=ro", uri=True)
    fields = {vid: json.loads(f) for vid, f in conn.execute("SELECT video_id, fields FROM videos")}
    conn.close()
    vv = lsa.encode_many([embedding_tokens(fields[v]) if v in fields else [] for v in vids])
    qv = lsa.encode_many([tok.tokenize(q) for q in queries])
    return retrieval_recall(qv, vv, targets)


def cmd_eval_recall(args: argparse.Namespace) -> int:
    from search.cli import _config_from
    from search.evaluation import load_judgements, read_jsonl
    from search.pipeline import SearchPipeline

    from .recall_eval import evaluate_recall, format_table

    for label, path in (("queries", args.queries), ("qrels", args.qrels)):
        if not Path(path).exists():
            print(f"{label} not found: {path}", file=sys.stderr)
            return 2
    queries, qrels = load_judgements(args.queries, args.qrels)
    intents = {str(r["qid"]): r.get("intent", "unknown") for r in read_jsonl(args.queries)}
    if args.limit:
        queries = dict(list(queries.items())[: args.limit])
    cfg = _config_from(args)
    for route in args.disable_route or []:
        cfg.setdefault("recall", {}).setdefault("routes", {}).setdefault(route, {})["enabled"] = False
    if args.rewrite_table:
        cfg.setdefault("recall", {}).setdefault("routes", {}).setdefault("rewrite", {})["table"] = args.rewrite_table
    pipe = SearchPipeline(cfg)
    try:
        seen = None
        if args.train_log:
            from .rewrites import log_query_counts

            seen = set(log_query_counts(args.train_log, "train"))
        res = evaluate_recall(pipe, queries, qrels, intents, ks=tuple(args.k), min_grade=args.min_grade, seen_queries=seen)
    finally:
        pipe.close()
    res["index"] = pipe.manifest.get("version_name")
    print(f"embedder={res['embedder']} rewrite_table={res['rewrite_table']} recall p50 {res['recall_ms_p50']} ms")
    print(format_table(res))
    if args.json:
        from .two_tower import _write_json_atomic

        _write_json_atomic(Path(args.json), res)
        print(f"wrote {args.json}")
    return 0


def cmd_train_discriminator(args: argparse.Namespace) -> int:
    from .discriminator import Discriminator, evaluate_pairs, lcqmc_pairs, our_pairs, split_pairs, train_discriminator
    from .rewrites import session_reformulations

    args.bert_dir, args.out = _model_dir(args, "bert_dir"), _model_dir(args, "discriminator_dir")
    if not (Path(args.bert_dir) / "config.json").exists():
        print(f"no model in {args.bert_dir}: run `mvsearch expansion pretrain` first", file=sys.stderr)
        return 2
    ses = session_reformulations(args.sessions, args.impressions) if args.sessions else {}
    ours = our_pairs(list(ses))
    lcq_path = Path(args.data) / "sentence_pairs" / "LCQMC_dev.txt"
    lcq = lcqmc_pairs(lcq_path) if lcq_path.exists() else []
    if not lcq:
        print(f"LCQMC not found at {lcq_path}: training on our pairs only", file=sys.stderr)
    o_tr, o_te = split_pairs(ours)
    l_tr, l_te = split_pairs(lcq)
    train_discriminator(o_tr + l_tr, args.bert_dir, args.out, _train_cfg(args), batch_size=args.batch_size,
                        rdrop_alpha=args.rdrop_alpha, resume=not args.no_resume)
    disc = Discriminator(args.out, threads=args.threads)
    res = {"ours_heldout": evaluate_pairs(disc, o_te), "lcqmc_dev_heldout": evaluate_pairs(disc, l_te),
           "published_reference": "BERT-base (Chinese) on LCQMC test: accuracy ~87% (Cui et al. 2019/2020); "
                                  "ours is a 4-layer 256-wide model on 20% of LCQMC dev, not the test set"}
    print(json.dumps(res, ensure_ascii=False, indent=1))
    from .two_tower import _write_json_atomic

    _write_json_atomic(Path(args.out) / "eval_report.json", res)
    return 0


def cmd_build_rewrites(args: argparse.Namespace) -> int:
    from .rewrites import gather_candidates, write_rewrite_table
    from .two_tower import TwoTowerEmbedder

    args.two_tower_dir, args.discriminator_dir = _model_dir(args, "two_tower_dir"), _model_dir(args, "discriminator_dir")
    emb = TwoTowerEmbedder.load(args.two_tower_dir) if args.two_tower_dir and Path(args.two_tower_dir).exists() else None
    if emb is None:
        print(f"no two-tower model at {args.two_tower_dir}: no embedding-neighbour candidates", file=sys.stderr)
    cands = gather_candidates(args.sessions, args.impressions, emb, args.click_graph, max_queries=args.max_queries)
    to_score = [c for c in cands.values() if "kb" not in c.sources]
    if not (Path(args.discriminator_dir) / "config.json").exists():
        print(f"no discriminator at {args.discriminator_dir}: run `mvsearch expansion train-discriminator` first", file=sys.stderr)
        return 2
    from .discriminator import Discriminator

    disc = Discriminator(args.discriminator_dir, threads=args.threads)
    scores = disc.score([c.query for c in to_score], [c.rewrite for c in to_score])
    for c, sc in zip(to_score, scores):
        c.score = float(sc)
    chosen = [c for c in cands.values() if "kb" in c.sources or (c.score or 0.0) >= args.threshold]
    by_src: dict[str, list[int]] = {}
    for c in to_score:
        for s in c.sources:
            by_src.setdefault(s, [0, 0])[0] += 1
            by_src[s][1] += int((c.score or 0) >= args.threshold)
    meta = {"threshold": args.threshold, "candidates": len(cands), "chosen": len(chosen),
            "scored_by_source": {s: {"candidates": a, "chosen": b} for s, (a, b) in by_src.items()},
            "discriminator": str(args.discriminator_dir), "two_tower": str(args.two_tower_dir) if emb else None}
    version = write_rewrite_table(args.out, chosen, meta)
    print(json.dumps(meta, ensure_ascii=False, indent=1))
    print(f"wrote {args.out} (version {version}); serve it with [recall.routes.rewrite] table = \"{args.out}\"")
    return 0


def add_commands(sub: argparse._SubParsersAction, eval_sub: argparse._SubParsersAction,
                 engine_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """`sub`: top-level subcommands; `eval_sub`: `mvsearch eval …`; `engine_args(p)` adds the
    shared engine/index options to a parser."""
    ex = sub.add_parser("expansion", help="expanded recall: small BERT, two-tower vectors, query rewrites")
    xs = ex.add_subparsers(dest="expansion_cmd", required=True)

    p = xs.add_parser("pretrain", help="build a WordPiece vocabulary from our texts and MLM-pretrain a small BERT")
    p.add_argument("--out", dest="bert_dir", help=f"output model directory (default: [expansion] bert_dir = {DEFAULT_BERT_DIR})")
    p.add_argument("--config", help="TOML config file (model directories under [expansion])")
    p.add_argument("--catalog", help="catalog JSONL (titles, descriptions, entities)")
    p.add_argument("--sessions", help="sessions log JSONL (its queries join the corpus)")
    p.add_argument("--data", default=_shared_default(), help="../shared/data (real queries, QBQTC, paraphrase pairs); '' = none")
    p.add_argument("--max-lines", type=int, default=None)
    p.add_argument("--vocab-size", type=int, default=12000)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    _train_args(p, steps=2000, lr=5e-4)
    p.set_defaults(func=cmd_pretrain)

    p = xs.add_parser("train-two-tower", help="EBR-style two-tower vector recall on click logs")
    p.add_argument("--impressions", required=True, help="impressions log JSONL (clicked pairs of split=train)")
    p.add_argument("--catalog", required=True, help="catalog JSONL (video texts for the video tower)")
    p.add_argument("--bert-dir", help="small BERT (tokenizer + embedding init); default [expansion] bert_dir")
    p.add_argument("--out", dest="two_tower_dir", help="default [expansion] two_tower_dir")
    p.add_argument("--config", help="TOML config file (model directories under [expansion])")
    p.add_argument("--index-dir", help="embedded index: mine hard negatives from its text recall, and compare with its LSA vectors")
    p.add_argument("--mine-queries", type=int, default=3000, help="train queries to mine text-recall negatives for (needs --index-dir)")
    p.add_argument("--dims", type=int, default=64, help="vector size (must equal the index's vectors.dims)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--hard-per-query", type=int, default=1)
    p.add_argument("--eval-queries", type=int, default=5000)
    _train_args(p, steps=1500, lr=2e-3, ckpt=500)
    p.set_defaults(func=cmd_train_two_tower)

    p = xs.add_parser("train-discriminator", help="cross-encoder rewrite discriminator (R-Drop) on our small BERT")
    p.add_argument("--bert-dir", help="default [expansion] bert_dir")
    p.add_argument("--out", dest="discriminator_dir", help="default [expansion] discriminator_dir")
    p.add_argument("--config", help="TOML config file (model directories under [expansion])")
    p.add_argument("--sessions", help="sessions log JSONL (reformulation positives)")
    p.add_argument("--impressions", help="impressions log JSONL (which reformulation got the click)")
    p.add_argument("--data", default=_shared_default(), help="../shared/data (LCQMC paraphrase pairs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rdrop-alpha", type=float, default=1.0)
    _train_args(p, steps=300, lr=1e-4, ckpt=100)
    p.set_defaults(func=cmd_train_discriminator)

    p = xs.add_parser("build-rewrites", help="rewrite candidates → discriminator → versioned rewrite table")
    p.add_argument("--out", required=True, help="rewrite table JSON to write")
    p.add_argument("--sessions", help="sessions log JSONL")
    p.add_argument("--impressions", help="impressions log JSONL")
    p.add_argument("--two-tower-dir", help="query vectors for embedding-neighbour candidates (default [expansion] two_tower_dir)")
    p.add_argument("--config", help="TOML config file (model directories under [expansion])")
    p.add_argument("--click-graph", help="click-graph model (relevance/click_graph.py) for mined synonyms")
    p.add_argument("--discriminator-dir", help="default [expansion] discriminator_dir")
    p.add_argument("--threshold", type=float, default=0.7)
    p.add_argument("--max-queries", type=int, default=20000)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_build_rewrites)

    p = eval_sub.add_parser("recall", help="Recall@K per recall route and for the union, vs text recall alone")
    p.add_argument("--queries", required=True)
    p.add_argument("--qrels", required=True)
    p.add_argument("--k", type=int, nargs="+", default=[100, 500])
    p.add_argument("--min-grade", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="first N queries only")
    p.add_argument("--disable-route", action="append", choices=["text", "rewrite", "vector"])
    p.add_argument("--rewrite-table", help="rewrite table file (default: the index bundle's rewrite_table.json)")
    p.add_argument("--train-log", help="impressions log the models trained on: adds the slice of judged queries not in its train split")
    p.add_argument("--json", help="write the results here")
    engine_args(p)
    p.set_defaults(func=cmd_eval_recall)
