"""`mvsearch` command line. Every command that reads an index takes the same engine/index
options (or one `--config FILE`)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_DEMO_DIR = Path("var/demo")
# stage packages that add subcommands: each has `add_commands(sub, eval_sub, engine_args)`
STAGE_COMMANDS = ("relevance.cli", "ranking.cli", "search.expansion.cli")


def _engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine / index")
    g.add_argument("--config", help="TOML config file (defaults: search/default_config.toml)")
    g.add_argument("--engine", choices=["embedded", "elasticsearch"], help="override [engine] kind")
    g.add_argument("--index-dir", help="index bundle directory (override [engine] index_dir)")
    g.add_argument("--es-url", help="Elasticsearch URL (override [engine] es_url)")
    g.add_argument("--index", dest="es_index", help="Elasticsearch alias (override [engine] es_index)")


def _config_from(args: argparse.Namespace) -> dict[str, Any]:
    from .config import load_config

    eng: dict[str, Any] = {}
    for key, attr in (("kind", "engine"), ("index_dir", "index_dir"), ("es_url", "es_url"), ("es_index", "es_index")):
        if getattr(args, attr, None):
            eng[key] = getattr(args, attr)
    over: dict[str, Any] = dict(getattr(args, "overrides", None) or {})
    if eng:
        over["engine"] = eng
    return load_config(getattr(args, "config", None), over or None)


def cmd_kb_build(args: argparse.Namespace) -> int:
    from .kb.build import DEFAULT_OUT, build_kb

    kb = build_kb(args.data, args.out or DEFAULT_OUT)
    print(f"knowledge base: {len(kb['artists'])} artists, {len(kb['songs'])} songs, {len(kb['shows'])} shows, "
          f"{len(kb['lyrics'])} lyric lines → {args.out or DEFAULT_OUT}")
    return 0


def cmd_catalog_demo(args: argparse.Namespace) -> int:
    from .demo_catalog import write_demo_catalog

    out = write_demo_catalog(args.out, size=args.size, seed=args.seed, progress=not args.quiet)
    print(f"demo catalog: {args.size} videos → {out} (business dictionary → {out.with_name('dictionary.txt')})")
    return 0


def cmd_index_build(args: argparse.Namespace) -> int:
    from .indexer import build_index

    cfg = _config_from(args)
    ec = cfg["engine"]
    res = build_index(args.catalog, ec["index_dir"], engine=ec["kind"], es_url=ec.get("es_url"), es_index=ec.get("es_index"),
                      dictionary=args.dictionary, index_config=args.index_config, show_progress=not args.quiet,
                      query_log=args.query_log)
    print(res.report.summary())
    print(f"index {res.version_name} ({res.engine}): {res.docs} videos in {res.seconds:.1f}s → {res.bundle_dir}")
    if res.extra.get("es_index"):
        print(f"elasticsearch: {res.extra['es_index']} behind alias {res.extra['es_alias']}")
    return 0


def _print_result(res: Any, as_json: bool, explain: bool) -> None:
    from .api import to_response

    resp = to_response(res, explain)
    if as_json:
        print(resp.model_dump_json(indent=1, exclude_none=True))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    q = resp.query
    console.print(f"[bold]{q.raw}[/] → normalized [cyan]{q.normalized}[/] tokens {[t.text for t in q.tokens]}  "
                  f"({resp.total} candidates, {resp.took_ms} ms, {resp.engine} {resp.index_version})")
    for w in resp.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    t = Table(show_lines=False)
    for col in ("#", "score", "grade", "title", "artists", "category", "plays", "sources"):
        t.add_column(col)
    for h in resp.results:
        t.add_row(str(h.rank), f"{h.score:.3f}", str(h.relevance_grade), h.title[:48], ",".join(h.artists)[:16], h.category,
                  str(h.play_count), ",".join(h.sources))
    console.print(t)
    if explain:
        for h in resp.results:
            console.print(f"[bold]{h.rank}. {h.video_id}[/] {json.dumps(h.explain, ensure_ascii=False)}")


def cmd_query(args: argparse.Namespace) -> int:
    from .pipeline import SearchPipeline, SearchRequest

    pipe = SearchPipeline(_config_from(args))
    try:
        res = pipe.search(SearchRequest(args.text, args.user_id, 1, args.size, args.explain))
        _print_result(res, args.json, args.explain)
    finally:
        pipe.close()
    return 0


def cmd_eval_search(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_search, load_judgements
    from .pipeline import SearchPipeline

    queries, qrels = load_judgements(args.queries, args.qrels)
    pipe = SearchPipeline(_config_from(args))
    try:
        rep = evaluate_search(pipe, queries, qrels, run_path=args.run, progress=not args.json)
    finally:
        pipe.close()
    s = rep.summary()
    if args.json:
        print(json.dumps(s, ensure_ascii=False, indent=1))
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"eval search ({s['queries']} queries, {s['judged_pairs']} judged pairs)")
        cols = [k for k in ("NDCG@10", "NDCG@20", "Recall@100", "MRR", "AUC(3,2 vs 0)", "distinct_songs@10",
                            "distinct_uploaders@10", "ILS@10") if k in s]
        for k in cols:
            t.add_column(k)
        t.add_row(*(str(s[k]) for k in cols))
        Console().print(t)
    return 0


def cmd_eval_qu(args: argparse.Namespace) -> int:
    """Spelling-correction precision/recall on labelled {typed, clean} pairs."""
    from query_understanding.evaluation import evaluate_correction

    from .evaluation import read_jsonl
    from .pipeline import SearchPipeline

    if not args.corrections and not args.intents and not args.ner_gold and not args.ner_cais:
        raise ValueError("give --corrections, --intents, --ner-gold and/or --ner-cais")
    pipe = SearchPipeline(_config_from(args))
    try:
        ner = _eval_ner(args, pipe) if (args.ner_gold or args.ner_cais) else None
        if ner is not None and not args.corrections and not args.intents:
            _print_ner(ner, args.json)
            return 0
        intents = None
        if args.intents:
            from query_understanding.intent import IntentClassifier, evaluate_intents

            clf = IntentClassifier.load(args.intent_model) if args.intent_model else None
            gold = read_jsonl(args.intents)
            if args.exclude_queries:  # hold out: queries the model was trained on do not count
                from query_understanding.normalize import normalize

                seen = {normalize(json.loads(l).get("query", "")) for l in open(args.exclude_queries, encoding="utf-8")}
                gold = [g for g in gold if normalize(g["query"]) not in seen]
            intents = evaluate_intents(pipe.understand, clf, gold)
        if not args.corrections:
            print(json.dumps({"intents": intents}, ensure_ascii=False, indent=None if args.json else 1))
            if ner is not None:
                _print_ner(ner, args.json)
            return 0
        pairs = read_jsonl(args.corrections)
        clean = [r["query"] for r in read_jsonl(args.clean_queries)] if args.clean_queries else []
        rep = evaluate_correction(pipe.understand, pairs, clean)
    finally:
        pipe.close()
    s = rep.summary()
    if intents is not None:
        s["intents"] = intents
    if args.json:
        print(json.dumps(s, ensure_ascii=False, indent=1))
        return 0
    print(f"spelling correction on {s['pairs']} noisy queries: precision {s['precision']}, recall {s['recall']}, "
          f"recall incl. rewrites {s['rewrite_recall']}; false corrections on {s['clean_queries']} clean queries: "
          f"{s['false_correction_rate']}")
    for k, v in s["by_noise"].items():
        print(f"  {k:<12} {v['pairs']:>6} pairs  recall {v['recall']:.3f}  incl. rewrites {v['rewrite_recall']:.3f}")
    if ner is not None:
        _print_ner(ner, False)
    if intents is not None:
        print(f"intent on {intents['queries']} queries: classifier {intents['classifier_accuracy']}, rules only "
              f"{intents['rules_only_accuracy']}; by intent {intents['classifier_by_intent']}")
    return 0


# Entity types each gold set labels (the others would count as false positives unfairly).
NER_GOLD_TYPES = {"generated": ["artist", "song", "show", "lyric", "version"], "cais": ["artist", "song", "album", "language"]}


def _eval_ner(args: argparse.Namespace, pipe: Any) -> dict[str, Any]:
    """Entity-level F1 of the dictionary, the tagger and the ensemble on each gold set."""
    import random

    from query_understanding.evaluation import evaluate_ner, ner_gold_from_intents
    from query_understanding.ner.training_data import read_cais

    from .evaluation import read_jsonl

    qu = pipe.stages.get("understanding")
    rec = getattr(qu, "recognizer", None)
    if rec is None:
        raise ValueError("NER is off in this configuration ([understanding.params] ner = false)")
    sets = {}
    if args.ner_gold:
        recs = read_jsonl(args.ner_gold)
        random.Random(0).shuffle(recs)
        sets["generated"] = ner_gold_from_intents(recs[: args.ner_limit])
    if args.ner_cais:
        sets["cais"] = read_cais(args.ner_cais)
    modes = ["dictionary"] + (["tagger", "ensemble"] if rec.tagger is not None else [])
    out: dict[str, Any] = {}
    for name, gold in sets.items():
        out[name] = {m: evaluate_ner(lambda t, m=m: rec.recognize(t, m), gold, NER_GOLD_TYPES[name]) for m in modes}
    return out


def _print_ner(ner: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"ner": ner}, ensure_ascii=False, indent=1))
        return
    for name, modes in ner.items():
        for mode, r in modes.items():
            per = "  ".join(f"{t} {v['f1']:.3f}" for t, v in r["by_type"].items())
            print(f"NER {name:<9} {mode:<10} {r['sentences']:>5} sentences  P {r['precision']:.3f}  R {r['recall']:.3f}  "
                  f"F1 {r['f1']:.3f}   ({per})")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import create_app
    from .pipeline import SearchPipeline

    cfg = _config_from(args)
    pipe = SearchPipeline(cfg)
    host = args.host or cfg["server"]["host"]
    port = int(args.port or cfg["server"]["port"])
    print(f"mvsearch serving {pipe.manifest['docs']} videos ({pipe.engine.name}, {pipe.manifest['version_name']}) "
          f"on http://{host}:{port}  (API docs: /docs)", flush=True)
    uvicorn.run(create_app(pipe), host=host, port=port, log_level="info")
    return 0


# used by the demo when present (the product itself never needs ../shared)
DEMO_CAIS = os.path.join(os.environ.get("MVSEARCH_SHARED_DATA", "../shared/data"), "nlu/cais_music/ch.train.bio")


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the demo catalog and index if missing, then serve (the README's first command)."""
    from .demo_catalog import write_demo_catalog
    from .indexer import CURRENT, build_index

    d = Path(args.dir)
    catalog = d / "docs.jsonl"
    if not catalog.exists() or args.rebuild:
        write_demo_catalog(catalog, size=args.size, seed=args.seed)
        print(f"demo catalog: {args.size} videos → {catalog}")
    if not (d / "index" / CURRENT).exists() or args.rebuild:
        res = build_index(catalog, d / "index", engine="embedded")
        print(res.report.summary())
        print(f"index {res.version_name}: {res.docs} videos in {res.seconds:.1f}s")
    overrides: dict[str, Any] = {}
    ner_model = d / "models" / "ner.pt"
    if not args.no_models:
        if not ner_model.exists() or args.rebuild:
            # a small, quick tagger (about a minute on 2 cores); `mvsearch qu train-ner` trains the full one
            print("demo: training the NER tagger (catalog titles + knowledge-base queries) …")
            cmd_train_ner(argparse.Namespace(catalog=str(catalog), out=str(ner_model), dictionary=None, cais=DEMO_CAIS,
                                             catalog_titles=6000, kb_queries=6000, epochs=2, hidden=96, seed=0, threads=2,
                                             quiet=True, config=args.config, engine="embedded", index_dir=str(d / "index"),
                                             es_url=None, es_index=None))
        overrides["understanding"] = {"params": {"ner_model": str(ner_model)}}
    # the demo service keeps its search log (shown results with snapshots + POST /events) for `mvsearch logs join`
    overrides["search"] = {"serve_log": str(d / "serve_log")}
    if args.no_serve:
        return 0
    ns = argparse.Namespace(config=args.config, engine="embedded", index_dir=str(d / "index"), es_url=None, es_index=None,
                            host=args.host, port=args.port, overrides=overrides)
    return cmd_serve(ns)


def cmd_new_words(args: argparse.Namespace) -> int:
    from query_understanding.new_words import discover, jieba_vocabulary, texts_from, write_candidates
    from query_understanding.normalize import normalize_doc_text
    from query_understanding.tokenize import read_dictionary

    from .kb import business_dictionary, load_kb

    if args.dictionary:
        known = {e.word for e in read_dictionary(args.dictionary)}
    else:
        known = {w for w, _, _ in business_dictionary(load_kb())}
    known |= {normalize_doc_text(w) for w in jieba_vocabulary()}
    words = discover(texts_from(args.catalog, args.logs), known, min_freq=args.min_freq, top=args.top)
    out = write_candidates(words, args.out)
    print(f"{len(words)} candidate words → {out}")
    for w in words[:15]:
        print(f"  {w.word}\tfreq {w.freq}\tcohesion {w.cohesion}\tentropy L{w.left_entropy}/R{w.right_entropy}")
    return 0


def cmd_train_intent(args: argparse.Namespace) -> int:
    """Weak labels (rules + clicks) from the train split of a search log → intent classifier."""
    from collections import Counter

    from query_understanding.intent import IntentClassifier, training_set

    from .pipeline import SearchPipeline

    pipe = SearchPipeline(_config_from(args))
    try:
        texts, labels = training_set(args.logs, pipe.understand, pipe.engine.get_docs)
    finally:
        pipe.close()
    if len(set(labels)) < 2:
        print("mvsearch: error: not enough labelled queries in the log to train an intent model", file=sys.stderr)
        return 2
    IntentClassifier.train(texts, labels, seed=args.seed).save(args.out)
    print(f"intent model on {len(texts)} weakly labelled queries {dict(Counter(labels))} → {args.out}")
    return 0


def _bundle_dictionary(args: argparse.Namespace) -> Path:
    if getattr(args, "dictionary", None):
        return Path(args.dictionary)
    from .indexer import current_bundle

    return current_bundle(Path(_config_from(args)["engine"]["index_dir"])) / "dictionary.txt"


def cmd_train_ner(args: argparse.Namespace) -> int:
    """Generate NER training labels (catalog titles by distant supervision, KB-composed
    queries, CAIS music utterances) and train the BiLSTM-CRF tagger."""
    from query_understanding.ner.lexicon import EntityLexicon
    from query_understanding.ner.tagger import TaggerConfig
    from query_understanding.ner.train import TrainConfig, train_tagger
    from query_understanding.ner.training_data import from_catalog, from_kb, read_cais
    from query_understanding.records import iter_jsonl
    from query_understanding.tokenize import read_dictionary

    from .kb import load_kb

    kb = load_kb()
    lexicon = EntityLexicon.build([(e.word, e.tag) for e in read_dictionary(_bundle_dictionary(args))],
                                  [l["line"] for l in kb.lyrics])
    items = from_catalog(iter_jsonl(args.catalog), lexicon, limit=args.catalog_titles)
    items += from_kb({"artists": kb.artists, "songs": kb.songs, "shows": kb.shows, "lyrics": kb.lyrics}, args.kb_queries, args.seed)
    cais = Path(args.cais) if args.cais else None
    if cais is not None and cais.exists():
        items += read_cais(cais)
    elif args.cais:
        print(f"note: {cais} not found; training without the CAIS utterances", file=sys.stderr)
    print(f"{len(items)} labelled sentences ({sum(1 for i in items if i.spans)} with entities); training …")
    tagger = train_tagger(items, lexicon, args.out, TrainConfig(epochs=args.epochs, seed=args.seed, threads=args.threads),
                          TaggerConfig(hidden=args.hidden), progress=None if args.quiet else print)
    print(f"→ {args.out}  (set [understanding.params] ner_model); history {tagger.meta['history']}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Simulated users search the catalog through the pipeline; logs + truth + judged sets."""
    from .indexer import CURRENT, build_index
    from .pipeline import SearchPipeline
    from .simulate import load_sim_config, simulate

    sim_cfg = load_sim_config(args.sim_config, {"days": args.days, "users": args.users, "seed": args.seed})
    out = Path(args.out)
    if not args.index_dir and not args.config:
        # No index given: build the embedded index of this catalog beside the logs.
        args.index_dir = str(out.parent / f"{out.name}_index")
        if not (Path(args.index_dir) / CURRENT).exists():
            build_index(args.catalog, args.index_dir, engine="embedded", show_progress=not args.quiet)
    cfg = _config_from(args)
    if sim_cfg.get("start") and not cfg["search"].get("reference_time"):
        cfg["search"]["reference_time"] = ""  # freshness follows each simulated request's own time
    pipe = SearchPipeline(cfg)
    try:
        summ = simulate(args.catalog, out, pipe, sim_cfg, progress=not args.quiet)
    finally:
        pipe.close()
    print(summ.table())
    print(f"→ {out}")
    return 0


def cmd_eval_online(args: argparse.Namespace) -> int:
    from .atomic import write_text_atomic
    from .simulate.online import compare_online, online_table

    runs = {}
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep or not (Path(path) / "logs" / "impressions.jsonl").exists():
            print(f"error: --runs takes NAME=DIR with DIR a simulation output (DIR/logs/impressions.jsonl); got {spec!r}", file=sys.stderr)
            return 2
        runs[name] = path
    res = compare_online(runs, args.skip_days)
    print(online_table(res))
    if args.out:
        write_text_atomic(args.out, json.dumps(res, indent=1, ensure_ascii=False))
        print(f"→ {args.out}")
    return 0


def cmd_logs_join(args: argparse.Namespace) -> int:
    """The service's serve log + events → the SPEC impression log that ranking training reads."""
    from .serve_log import join_logs

    try:
        js = join_logs(args.log_dir, args.out, args.validation_days, args.test_days)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{js.requests} requests, {js.impressions} impressions, {js.clicks} clicks; "
          f"{js.events_without_impression} events matched no served result; splits {js.splits}")
    print(f"→ {Path(args.out) / 'logs' / 'impressions.jsonl'}  (mvsearch ranking train --logs {args.out} …)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mvsearch", description="music-video search engine")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    kb = sub.add_parser("kb", help="knowledge base").add_subparsers(dest="sub", required=True)
    b = kb.add_parser("build", help="build search/kb/kb.json.gz from ../shared/data")
    b.add_argument("--data", default=os.environ.get("MVSEARCH_SHARED_DATA", "../shared/data"))
    b.add_argument("--out")
    b.set_defaults(func=cmd_kb_build)

    cat = sub.add_parser("catalog", help="catalogs").add_subparsers(dest="sub", required=True)
    c = cat.add_parser("demo", help="generate the demo catalog (docs.jsonl) and business dictionary")
    c.add_argument("--out", default=str(DEFAULT_DEMO_DIR / "docs.jsonl"))
    c.add_argument("--size", type=int, default=20_000, help="videos (1000000 for benchmarks)")
    c.add_argument("--seed", type=int, default=7)
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_catalog_demo)

    ix = sub.add_parser("index", help="indexes").add_subparsers(dest="sub", required=True)
    i = ix.add_parser("build", help="validate, tokenize and index a catalog (atomic version switch)")
    i.add_argument("--catalog", required=True)
    i.add_argument("--dictionary", help="business dictionary (jieba format); default: from the bundled knowledge base")
    i.add_argument("--index-config", help="index definition (default: index_config/index.json)")
    i.add_argument("--query-log", help="search log (impressions or sessions JSONL) whose query frequencies feed spelling correction")
    i.add_argument("--quiet", action="store_true")
    _engine_args(i)
    i.set_defaults(func=cmd_index_build)

    s = sub.add_parser("serve", help="run the search API")
    _engine_args(s)
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.set_defaults(func=cmd_serve)

    q = sub.add_parser("query", help="run one query through the pipeline")
    q.add_argument("text")
    q.add_argument("--explain", action="store_true")
    q.add_argument("--json", action="store_true")
    q.add_argument("--size", type=int, default=10)
    q.add_argument("--user-id")
    _engine_args(q)
    q.set_defaults(func=cmd_query)

    ev = sub.add_parser("eval", help="offline evaluation").add_subparsers(dest="sub", required=True)
    e = ev.add_parser("search", help="NDCG@10/20, Recall@100, MRR, AUC of the whole pipeline on judged queries")
    e.add_argument("--queries", required=True, help='queries.jsonl: {"qid","query"}')
    e.add_argument("--qrels", required=True, help='qrels.jsonl: {"qid","video_id","grade"}')
    e.add_argument("--json", action="store_true")
    e.add_argument("--run", help="also write the ranked results (TREC run format)")
    _engine_args(e)
    e.set_defaults(func=cmd_eval_search)

    eq = ev.add_parser("qu", help="query understanding: spelling-correction precision/recall, NER entity F1, intent accuracy")
    eq.add_argument("--corrections", help='JSONL {"typed","clean"[,"noise"]} labelled noisy queries (the simulator writes them; README)')
    eq.add_argument("--intents", help='JSONL {"query","kind"} gold intents (the simulator writes them; README)')
    eq.add_argument("--intent-model", help="intent classifier (mvsearch qu train-intent)")
    eq.add_argument("--exclude-queries", help="JSONL with a query field: queries to leave out of the intent evaluation (training queries)")
    eq.add_argument("--clean-queries", help='JSONL {"query"} of clean queries (false-correction rate), e.g. judged/queries.jsonl')
    eq.add_argument("--ner-gold", help='JSONL of generated queries with what they name ({"query","kind","artist","song","version","show","line"}; the simulator records them)')
    eq.add_argument("--ner-cais", help="CAIS music file (char-level BIOES), e.g. ../shared/data/nlu/cais_music/ch.valid.bio")
    eq.add_argument("--ner-limit", type=int, default=5000, help="sentences sampled from --ner-gold (fixed seed)")
    eq.add_argument("--json", action="store_true")
    _engine_args(eq)
    eq.set_defaults(func=cmd_eval_qu)

    eo = ev.add_parser("online", help="A/B in simulation: CTR, valid plays, satisfaction, hidden grades of the same world served by several pipelines")
    eo.add_argument("--runs", nargs="+", required=True, metavar="NAME=DIR", help="simulation outputs (mvsearch simulate --config ARM.toml); the first is the baseline")
    eo.add_argument("--skip-days", type=int, default=0, help="warm-up days left out (counters and histories start empty)")
    eo.add_argument("--out", help="also write the figures as JSON")
    eo.set_defaults(func=cmd_eval_online)

    d = sub.add_parser("demo", help="build the demo catalog + embedded index if missing, then serve")
    d.add_argument("--dir", default=str(DEFAULT_DEMO_DIR))
    d.add_argument("--size", type=int, default=20_000)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--rebuild", action="store_true")
    d.add_argument("--no-serve", action="store_true")
    d.add_argument("--no-models", action="store_true", help="skip training the demo's models (NER tagger)")
    d.add_argument("--config")
    d.add_argument("--host")
    d.add_argument("--port", type=int)
    d.set_defaults(func=cmd_demo)

    qu = sub.add_parser("qu", help="query-understanding offline jobs").add_subparsers(dest="sub", required=True)
    nw = qu.add_parser("new-words", help="discover words missing from the business dictionary (for review)")
    nw.add_argument("--catalog", required=True)
    nw.add_argument("--logs", help="impressions JSONL: its queries count too")
    nw.add_argument("--dictionary", help="business dictionary (default: from the bundled knowledge base)")
    nw.add_argument("--out", required=True, help="TSV of candidates, best first")
    nw.add_argument("--min-freq", type=int, default=8)
    nw.add_argument("--top", type=int, default=500)
    nw.set_defaults(func=cmd_new_words)

    ti = qu.add_parser("train-intent", help="train the intent classifier on a search log (weak labels from rules + clicks)")
    ti.add_argument("--logs", required=True, help="impressions JSONL (only its train split is used)")
    ti.add_argument("--out", required=True, help="model file (joblib), set as [understanding.params] intent_model")
    ti.add_argument("--seed", type=int, default=0)
    _engine_args(ti)
    ti.set_defaults(func=cmd_train_intent)

    tn = qu.add_parser("train-ner", help="train the NER tagger (BiLSTM-CRF) on labels generated from the catalog, KB and CAIS")
    tn.add_argument("--catalog", required=True, help="catalog JSONL whose titles are labelled by their own metadata")
    tn.add_argument("--out", required=True, help="model file, set as [understanding.params] ner_model")
    tn.add_argument("--dictionary", help="business dictionary (default: the index bundle's)")
    tn.add_argument("--cais", default=os.path.join(os.environ.get("MVSEARCH_SHARED_DATA", "../shared/data"), "nlu/cais_music/ch.train.bio"),
                    help="CAIS music train file (char-level BIOES); skipped with a note if missing")
    tn.add_argument("--catalog-titles", type=int, default=20_000)
    tn.add_argument("--kb-queries", type=int, default=20_000)
    tn.add_argument("--epochs", type=int, default=4)
    tn.add_argument("--hidden", type=int, default=96)
    tn.add_argument("--seed", type=int, default=0)
    tn.add_argument("--threads", type=int, default=1)
    tn.add_argument("--quiet", action="store_true")
    _engine_args(tn)
    tn.set_defaults(func=cmd_train_ner)

    sm = sub.add_parser("simulate", help="simulated users search the catalog through the pipeline; write logs, aggregates, judged sets")
    sm.add_argument("--catalog", required=True)
    sm.add_argument("--out", required=True)
    sm.add_argument("--days", type=int)
    sm.add_argument("--users", type=int)
    sm.add_argument("--seed", type=int)
    sm.add_argument("--sim-config", help="TOML overriding search/simulate/default_sim.toml")
    sm.add_argument("--quiet", action="store_true")
    _engine_args(sm)
    sm.set_defaults(func=cmd_simulate)

    lg = sub.add_parser("logs", help="the service's search log").add_subparsers(dest="sub", required=True)
    lj = lg.add_parser("join", help="serve.jsonl + events.jsonl ([search] serve_log) → OUT/logs/impressions.jsonl, split by day")
    lj.add_argument("--log-dir", required=True, help="the [search] serve_log directory")
    lj.add_argument("--out", required=True)
    lj.add_argument("--validation-days", type=int, default=1)
    lj.add_argument("--test-days", type=int, default=1)
    lj.set_defaults(func=cmd_logs_join)

    es = sub.add_parser("es", help="local Elasticsearch for tests/dev: start | stop | fetch (see search/es_local.py)", add_help=False)
    es.set_defaults(func=None)

    from .annotation.cli import add_annotate_parser

    add_annotate_parser(sub, _engine_args)  # mvsearch annotate user|batch|stats|export

    import importlib

    # Each stage package owns its commands (training, evaluation); this is the one place they meet.
    for module in STAGE_COMMANDS:
        importlib.import_module(module).add_commands(sub, ev, _engine_args)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "es":
        from . import es_local
        return es_local.main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as e:
        print(f"mvsearch: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from .engines.base import EngineUnavailable
        if isinstance(e, EngineUnavailable):
            print(f"mvsearch: error: {e}", file=sys.stderr)
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())
