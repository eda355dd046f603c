"""Commands of this stage, added to `mvsearch` by search/cli.py (STAGE_COMMANDS):

  mvsearch eval census  [--seeds 0 1 2]            public MMoE benchmark (census-income)
  mvsearch eval ranking --compare --logs DIR        all ranking models on the simulated logs
  mvsearch ranking train --logs DIR --model mmoe    train the serving model file
"""
from __future__ import annotations

import argparse
import os
from typing import Callable

DEFAULT_SHARED = os.environ.get("MVSEARCH_SHARED_DATA", "../shared/data")


def cmd_eval_census(args: argparse.Namespace) -> int:
    from .census import census_table, run_census, write_json_atomic

    print(f"census-income benchmark, seeds {args.seeds}, {args.epochs} epochs, {args.threads} thread(s)")
    res = run_census(args.shared_data, args.seeds, epochs=args.epochs, num_threads=args.threads, weighting=args.weighting)
    print(census_table(res))
    write_json_atomic(args.out, res)
    print(f"→ {args.out}")
    return 0


def _pipeline_access(args: argparse.Namespace):
    """Query understanding and the document store of the serving pipeline: the offline path uses
    the same stage and the same stored docs as serving."""
    from search.cli import _config_from
    from search.pipeline import SearchPipeline

    from .features import QueryInfo

    pipe = SearchPipeline(_config_from(args))
    return pipe, (lambda q: QueryInfo.from_understood(pipe.understand(q))), pipe.engine.get_docs


def _fixed_builder(args: argparse.Namespace):
    if not getattr(args, "features_from", None):
        return None
    from .learned import load_model

    return load_model(args.features_from)[1]


def _rates(args: argparse.Namespace) -> dict[str, float]:
    return {"train": args.sample_train, "validation": args.sample_validation, "test": args.sample_test}


def cmd_eval_ranking(args: argparse.Namespace) -> int:
    from .census import write_json_atomic
    from .compare import COMPARE_RUNS, compare_table, prepare_dataset, run_one, summarize

    if not args.compare:
        print("nothing to do: pass --compare (trains every model on the logs and prints the comparison table)")
        return 2
    pipe, understand, get_docs = _pipeline_access(args)
    ds = prepare_dataset(args.logs, understand, get_docs, args.cache_dir, _rates(args), rate_method=args.rate_method,
                         fixed_builder=_fixed_builder(args))
    pipe.close()
    runs = []
    specs = [s for s in COMPARE_RUNS if not args.models or s["model"] in args.models]
    for spec in specs:
        for seed in args.seeds:
            rec, _ = run_one(spec, ds, seed, args.epochs, args.threads)
            runs.append(rec)
            print(f"  {spec['label']:12s} {spec['weighting']:5s} seed {seed}: CTR-AUC {rec.get('auc_ctr', float('nan')):.4f} "
                  f"CVR-AUC {rec.get('auc_cvr', float('nan')):.4f}  ({rec['train_seconds']:.0f}s)", flush=True)
    summary = summarize(runs)
    print(compare_table(summary))
    print(f"train/validation/test impressions: {', '.join(f'{k} {len(v)}' for k, v in ds.splits.items())}; "
          "CVR-AUC on clicked test impressions; GAUC = CTR AUC per user / per query weighted by impressions; "
          "serve ms = one batch of 500 candidates, model forward, 1 thread")
    write_json_atomic(args.out, {"logs": str(args.logs), "sample_rates": _rates(args), "epochs": args.epochs, "seeds": args.seeds,
                                 "rows": {k: len(v) for k, v in ds.splits.items()}, "summary": summary, "runs": runs})
    print(f"→ {args.out}")
    return 0


def cmd_ranking_train(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from .compare import COMPARE_RUNS, prepare_dataset, run_one
    from .learned import save_model

    pipe, understand, get_docs = _pipeline_access(args)
    ds = prepare_dataset(args.logs, understand, get_docs, args.cache_dir, _rates(args), rate_method=args.rate_method,
                         fixed_builder=_fixed_builder(args))
    pipe.close()
    spec = next((s for s in COMPARE_RUNS if s["model"] == args.model and (s["weighting"] in (args.weighting, "-"))), None)
    if spec is None:
        raise SystemExit(f"no training recipe for model {args.model!r} with weighting {args.weighting!r}")
    if spec["model"] == "single_task":
        raise SystemExit("single_task is two models (CTR, CVR); serve deepfm, esmm, shared_bottom, mmoe or ple")
    rec, model = run_one(spec, ds, args.seed, args.epochs, args.threads)
    out = Path(args.out)
    state = out.with_name(out.stem + ".state.json")
    save_model(out, model, ds.builder, {"logs": str(args.logs), "test": {k: v for k, v in rec.items() if k.startswith(("auc", "gauc"))},
                                        "spec": {k: v for k, v in spec.items() if k != "params"}})
    shutil.copyfile(ds.state_path, state)
    print(f"{spec['label']} ({spec['weighting']}): test CTR-AUC {rec.get('auc_ctr', float('nan')):.4f}, CVR-AUC {rec.get('auc_cvr', float('nan')):.4f}, "
          f"GAUC user {rec.get('gauc_ctr_user', float('nan')):.4f} → {out} (feature store {state})")
    return 0


def add_commands(sub: argparse._SubParsersAction, eval_sub: argparse._SubParsersAction,
                 engine_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """`sub`: top-level subcommands; `eval_sub`: `mvsearch eval …`; `engine_args(p)` adds the
    shared engine/index options to a parser."""
    c = eval_sub.add_parser("census", help="multi-task benchmark of the MMoE paper: single-task, Share-Bottom, MMoE, PLE on census-income")
    c.add_argument("--shared-data", default=DEFAULT_SHARED, help="shared data folder (env MVSEARCH_SHARED_DATA)")
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    c.add_argument("--epochs", type=int, default=6)
    c.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    c.add_argument("--weighting", choices=["fixed", "uwl"], default="fixed")
    c.add_argument("--out", default="benchmarks/results/census.json")
    c.set_defaults(func=cmd_eval_census)

    def data_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--logs", required=True, help="simulation output directory (with logs/impressions.jsonl)")
        p.add_argument("--sample-train", type=float, default=0.12, help="share of train requests used (whole requests)")
        p.add_argument("--sample-validation", type=float, default=0.3)
        p.add_argument("--sample-test", type=float, default=0.5)
        p.add_argument("--rate-method", choices=["bayes", "wilson", "plain", "all"], default="bayes",
                       help="how behaviour rates become features")
        p.add_argument("--cache-dir", default="var/ranking_cache", help="prepared feature arrays are cached here")
        p.add_argument("--features-from", help="model file that served these logs: reuse its feature state and the vectors it logged")
        p.add_argument("--epochs", type=int, default=3)
        p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
        engine_args(p)

    r = eval_sub.add_parser("ranking", help="ranking models on the simulated logs: --compare prints the comparison table")
    r.add_argument("--compare", action="store_true", help="train every model (DeepFM … PLE) and compare on the test days")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--models", nargs="*", help="only these architectures (deepfm single_task shared_bottom esmm mmoe ple)")
    r.add_argument("--out", default="benchmarks/results/ranking_compare.json")
    data_args(r)
    r.set_defaults(func=cmd_eval_ranking)

    rk = sub.add_parser("ranking", help="ranking stage: train the serving model")
    rsub = rk.add_subparsers(dest="ranking_cmd", required=True)
    t = rsub.add_parser("train", help="train a ranking model on simulated logs and write the model file + feature store")
    t.add_argument("--model", default="mmoe", choices=["deepfm", "shared_bottom", "esmm", "mmoe", "ple"])
    t.add_argument("--weighting", default="uwl", choices=["fixed", "uwl"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="var/models/ranker.pt")
    data_args(t)
    t.set_defaults(func=cmd_ranking_train)
