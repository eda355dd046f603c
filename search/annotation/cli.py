"""`mvsearch annotate …`: accounts, batches, stats and export from the command line.

    mvsearch annotate user add NAME --role admin|annotator [--password P]   (else $MVSEARCH_ANNOTATION_PASSWORD or a prompt)
    mvsearch annotate user list | passwd NAME | deactivate NAME | activate NAME
    mvsearch annotate batch create --name N --strategy search|logs|upload|disagreement|intent
             [--queries FILE | --sample-queries K] [--logs FILE] [--pairs FILE] [--gold FILE --gold-rate 0.1]
             [--annotators N] [--assign a,b,c] [--top-k 10] [--size N] [--seed S] [engine options]
    mvsearch annotate batch list | close NAME | open NAME
    mvsearch annotate stats --batch NAME [--json]
    mvsearch annotate export --batch NAME --out qrels.jsonl [--method majority|adjudicated] [--queries-out FILE] [--include-gold]

Every command takes `--db PATH` (default: `[annotation] db_path` of the config,
var/annotation.sqlite).
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any, Callable

PASSWORD_ENV = "MVSEARCH_ANNOTATION_PASSWORD"


def add_annotate_parser(sub: Any, engine_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the `annotate` command group on the main parser's subparsers."""
    ap = sub.add_parser("annotate", help="relevance annotation: accounts, batches, agreement stats, qrels export")
    asub = ap.add_subparsers(dest="sub", required=True)

    def common(p: argparse.ArgumentParser, engine: bool = False) -> None:
        p.add_argument("--db", help="annotation database (default: [annotation] db_path, var/annotation.sqlite)")
        if engine:
            engine_args(p)
        else:
            p.add_argument("--config", help="TOML config file")

    user = asub.add_parser("user", help="annotator and admin accounts").add_subparsers(dest="action", required=True)
    u = user.add_parser("add", help="add an account")
    u.add_argument("name")
    u.add_argument("--role", choices=["annotator", "admin"], default="annotator")
    u.add_argument("--password", help=f"the password (else ${PASSWORD_ENV}, else a prompt)")
    common(u)
    u.set_defaults(func=cmd_user_add)
    u = user.add_parser("list", help="list accounts")
    common(u)
    u.set_defaults(func=cmd_user_list)
    u = user.add_parser("passwd", help="set a new password (logs the user out everywhere)")
    u.add_argument("name")
    u.add_argument("--password")
    common(u)
    u.set_defaults(func=cmd_user_passwd)
    for act in ("deactivate", "activate"):
        u = user.add_parser(act, help=f"{act} an account")
        u.add_argument("name")
        common(u)
        u.set_defaults(func=cmd_user_active, active=(act == "activate"))

    batch = asub.add_parser("batch", help="labelling batches").add_subparsers(dest="action", required=True)
    b = batch.add_parser("create", help="create a batch of (query, video) pairs and assign them")
    b.add_argument("--name", required=True)
    b.add_argument("--strategy", choices=["search", "logs", "upload", "disagreement", "intent"], default="search")
    b.add_argument("--queries", help="queries file (one a line, or JSONL with \"query\") for search/intent/disagreement")
    b.add_argument("--sample-queries", type=int, help="sample this many queries from the catalog's artists/songs (default 30)")
    b.add_argument("--logs", help="impressions log JSONL (SPEC search-log schema)")
    b.add_argument("--pairs", help='pairs JSONL: {"query","video_id"[,"qid"]}')
    b.add_argument("--gold", help='gold pairs JSONL: {"query","video_id","grade"}')
    b.add_argument("--gold-rate", type=float, default=None, help="share of the batch that is gold (default 0.1)")
    b.add_argument("--annotators", type=int, default=None, help="annotators per pair (default 3)")
    b.add_argument("--assign", help="comma-separated annotator names (default: every active annotator)")
    b.add_argument("--top-k", type=int, default=None, help="hits per query from search results (default 10)")
    b.add_argument("--size", type=int, help="pairs to sample from the pool (default: all)")
    b.add_argument("--min-impressions", type=int, default=3, help="logs: pairs with fewer impressions are left out")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--created-by", help="admin name recorded as the creator")
    common(b, engine=True)
    b.set_defaults(func=cmd_batch_create)
    b = batch.add_parser("list", help="list batches with progress")
    common(b)
    b.set_defaults(func=cmd_batch_list)
    for act in ("close", "open"):
        b = batch.add_parser(act, help=f"{act} a batch (closed batches take no labels)")
        b.add_argument("name")
        common(b)
        b.set_defaults(func=cmd_batch_status, status="closed" if act == "close" else "open")

    s = asub.add_parser("stats", help="agreement (Cohen's, Fleiss' kappa), gold accuracy, progress of a batch")
    s.add_argument("--batch", required=True)
    s.add_argument("--json", action="store_true")
    common(s)
    s.set_defaults(func=cmd_stats)

    e = asub.add_parser("export", help="write the batch's labelled set as qrels.jsonl")
    e.add_argument("--batch", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--method", choices=["majority", "adjudicated"], default="majority")
    e.add_argument("--queries-out", help='also write the queries file ({"qid","query"}) for mvsearch eval search')
    e.add_argument("--include-gold", action="store_true", help="also export the gold pairs (method gold)")
    e.add_argument("--min-annotators", type=int, default=1)
    common(e)
    e.set_defaults(func=cmd_export)


def _cfg(args: argparse.Namespace) -> dict[str, Any]:
    from search.config import load_config

    return load_config(getattr(args, "config", None)).get("annotation", {})


def _store(args: argparse.Namespace):
    from .store import AnnotationStore

    path = args.db or _cfg(args).get("db_path", "var/annotation.sqlite")
    return AnnotationStore(path)


def _password(args: argparse.Namespace) -> str:
    if getattr(args, "password", None):
        return args.password
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise ValueError(f"no password: pass --password or set ${PASSWORD_ENV}")
    p1 = getpass.getpass("password: ")
    if p1 != getpass.getpass("again: "):
        raise ValueError("the passwords differ")
    return p1


def _run(fn: Callable[[], int]) -> int:
    from .store import AnnotationError

    try:
        return fn()
    except AnnotationError as e:
        print(f"mvsearch annotate: error: {e}", file=sys.stderr)
        return 2


def cmd_user_add(args: argparse.Namespace) -> int:
    def go() -> int:
        st = _store(args)
        u = st.create_user(args.name, _password(args), args.role)
        print(f"user {u.name} ({u.role}) added to {st.path}")
        return 0
    return _run(go)


def cmd_user_list(args: argparse.Namespace) -> int:
    st = _store(args)
    for u in st.list_users():
        print(f"{u.name}\t{u.role}\t{'active' if u.active else 'deactivated'}\t{u.created_at[:19]}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    def go() -> int:
        _store(args).set_password(args.name, _password(args))
        print(f"password of {args.name} changed")
        return 0
    return _run(go)


def cmd_user_active(args: argparse.Namespace) -> int:
    def go() -> int:
        _store(args).set_active(args.name, args.active)
        print(f"{args.name} {'activated' if args.active else 'deactivated'}")
        return 0
    return _run(go)


def cmd_batch_create(args: argparse.Namespace) -> int:
    from search.cli import _config_from

    from .sampling import read_queries
    from .service import AnnotationService, BatchRequest

    def go() -> int:
        cfg = _config_from(args)
        acfg = cfg.get("annotation", {})
        st = _store(args)
        actor = st.get_user(name=args.created_by) if args.created_by else None
        if args.created_by and actor is None:
            raise ValueError(f"no user {args.created_by!r}")
        needs_index = args.strategy in ("search", "intent", "disagreement", "logs") or not _all_embedded(args.pairs, args.gold)
        pipe = None
        if needs_index:
            from search.pipeline import SearchPipeline

            pipe = SearchPipeline(cfg)
        try:
            svc = AnnotationService(st, pipe, acfg)
            req = BatchRequest(
                name=args.name, strategy=args.strategy, queries=read_queries(args.queries) if args.queries else None,
                sample_queries=args.sample_queries, logs=args.logs, pairs=args.pairs, gold=args.gold,
                gold_rate=args.gold_rate if args.gold_rate is not None else float(svc.config["gold_rate"]),
                annotators=[x.strip() for x in args.assign.split(",") if x.strip()] if args.assign else None,
                per_pair=args.annotators if args.annotators is not None else int(svc.config["annotators_per_pair"]),
                top_k=args.top_k if args.top_k is not None else int(svc.config["top_k"]), size=args.size, seed=args.seed,
                min_impressions=args.min_impressions)
            res = svc.create_batch(req, actor=actor)
            print(res.summary())
        finally:
            if pipe is not None:
                pipe.close()
        return 0
    return _run(go)


def _all_embedded(*paths: str | None) -> bool:
    """True if every line of the given JSONL files carries its own `video` record."""
    for p in paths:
        if not p:
            continue
        with open(p, encoding="utf-8-sig") as f:
            for line in f:
                if line.strip():
                    try:
                        if not isinstance(json.loads(line).get("video"), dict):
                            return False
                    except (json.JSONDecodeError, AttributeError):
                        return False
    return True


def cmd_batch_list(args: argparse.Namespace) -> int:
    st = _store(args)
    rows = st.list_batches()
    if not rows:
        print("no batches")
    for x in rows:
        b = x["batch"]
        print(f"{b.name}\t{b.strategy}\t{b.status}\t{x['pairs']} pairs ({x['gold']} gold)\t{x['done']}/{x['tasks']} tasks done"
              f"\t{x['skipped']} skipped\t{b.created_at[:19]}")
    return 0


def cmd_batch_status(args: argparse.Namespace) -> int:
    from .service import AnnotationService

    def go() -> int:
        st = _store(args)
        b = AnnotationService(st).batch(args.name)
        st.set_batch_status(b.id, args.status)
        print(f"batch {b.name} {args.status}")
        return 0
    return _run(go)


def cmd_stats(args: argparse.Namespace) -> int:
    from .service import AnnotationService, fmt_kappa

    def go() -> int:
        svc = AnnotationService(_store(args))
        b = svc.batch(args.batch)
        s = svc.stats(b.id)
        if args.json:
            print(json.dumps(s, ensure_ascii=False, indent=1))
            return 0
        from rich.console import Console
        from rich.table import Table

        def pct(x: float | None) -> str:
            return "—" if x is None else f"{100 * x:.0f}%"

        def val(x: Any) -> str:
            return "—" if x is None else str(x)

        con = Console()
        con.print(f"[bold]{b.name}[/] ({b.strategy}, {b.status}): {s['pairs_labelled']} pairs labelled, {s['pairs_with_2plus']} with ≥2 grades; "
                  f"Fleiss κ {fmt_kappa(s['fleiss_kappa'])} (4 grades, {s['fleiss_items']} pairs), "
                  f"{fmt_kappa(s['fleiss_kappa_binary'])} (≥2 vs ≤1); agreement {pct(s['percent_agreement'])} / binary "
                  f"{pct(s['percent_agreement_binary'])}; gold accuracy {pct(s['gold_accuracy'])} on {s['gold_items']} gold labels; "
                  f"{s['disagreements']} disagreements, {s['adjudicated']} adjudicated")
        t = Table(title="annotators")
        for col in ("annotator", "done", "skipped", "pending", "κ vs majority", "binary κ", "agree", "gold acc", "gold MAE", "s/label"):
            t.add_column(col)
        for a in s["annotators"]:
            t.add_row(a["annotator"], str(a["done"]), str(a["skipped"]), str(a["pending"]), fmt_kappa(a["vs_majority_kappa"]),
                      fmt_kappa(a["vs_majority_kappa_binary"]), pct(a["vs_majority_agreement"]), pct(a["gold_accuracy"]),
                      val(a["gold_mae"]), val(a["median_seconds_per_label"]))
        con.print(t)
        if s["pairwise"]:
            t = Table(title="pairwise Cohen's κ")
            for col in ("pair", "shared", "κ", "quadratic κ", "binary κ", "agree"):
                t.add_column(col)
            for p in s["pairwise"]:
                t.add_row(f"{p['a']} · {p['b']}", str(p["shared"]), fmt_kappa(p["cohen_kappa"]), fmt_kappa(p["cohen_kappa_quadratic"]),
                          fmt_kappa(p["cohen_kappa_binary"]), pct(p["agreement"]))
            con.print(t)
        return 0
    return _run(go)


def cmd_export(args: argparse.Namespace) -> int:
    from .export import queries_of, to_jsonl, write_atomic
    from .service import AnnotationService

    def go() -> int:
        svc = AnnotationService(_store(args))
        b = svc.batch(args.batch)
        rows, rep = svc.export(b.id, args.method, args.include_gold, args.min_annotators)
        write_atomic(args.out, to_jsonl(rows))
        if args.queries_out:
            write_atomic(args.queries_out, to_jsonl(queries_of(rows)))
        print(rep.summary())
        print(f"→ {args.out}" + (f" (queries → {args.queries_out})" if args.queries_out else ""))
        return 0
    return _run(go)
