"""Training data from the simulated search logs, and the model comparison (issue 8 item 4).

`prepare_dataset` replays the impression log in serving order (feature_store.replay_impressions),
fits the FeatureBuilder on the TRAIN split only, transforms every kept impression and caches the
arrays (npz) so several models and seeds reuse them. Splits are the logs' own `split` field
(train / validation / test by day).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .feature_store import replay_impressions
from .features import FeatureBuilder, QueryInfo
from .models import InputSchema, build_model
from .trainer import TabularData, TrainConfig, evaluate, train_model

DEFAULT_RATES = {"train": 0.12, "validation": 0.3, "test": 0.5}
N_POSITIONS = 10


@dataclass
class LogDataset:
    builder: FeatureBuilder
    schema: InputSchema            # tasks ["ctr", "cvr"]; cvr label = valid play (0 when not clicked)
    splits: dict[str, TabularData]
    state_path: Path               # behaviour state at the end of the logs (for serving)
    prepare_seconds: float


def _tabular(rows: list[Any], builder: FeatureBuilder, use_logged: bool = False) -> TabularData:
    dense, sparse = builder.transform([r.context for r in rows])
    if use_logged:
        apply_logged_vectors(rows, builder, dense, sparse)
    pos = np.array([r.position for r in rows], dtype=np.int64)
    click = np.array([r.clicked for r in rows], dtype=np.float32)
    valid = np.array([r.valid_play and r.clicked for r in rows], dtype=np.float32)
    users = np.array([r.user_id for r in rows])
    queries = np.array([r.query for r in rows])
    return TabularData(dense, sparse, {"ctr": click, "cvr": valid}, pos, {"user": users, "query": queries})


def apply_logged_vectors(rows: list[Any], builder: FeatureBuilder, dense: np.ndarray, sparse: np.ndarray) -> int:
    """Where the learned ranker served an impression with THIS feature state (same builder, so the
    same vocabulary indices), take the vector it logged instead of the rebuilt one: training then
    sees exactly what serving saw. Returns how many rows used a logged vector."""
    names = builder.dense_names()
    fields = [f"sparse.{k}" for k in builder.vocabs]
    age_col = names.index("example_age")
    n = 0
    for i, r in enumerate(rows):
        v = r.logged_vector
        if v and all(k in v for k in names) and all(k in v for k in fields):
            age = dense[i, age_col]          # example age is the training run's (serving logged 0)
            dense[i] = [v[k] for k in names]
            dense[i, age_col] = age
            sparse[i] = [int(v[k]) for k in fields]
            n += 1
    return n


def _cache_key(logs: Path, rates: dict[str, float], seed: int, rate_method: str, fixed: FeatureBuilder | None = None) -> str:
    st = logs.stat()
    code = FeatureBuilder(rate_method).dense_names()
    frozen = json.dumps(fixed.to_dict(), sort_keys=True) if fixed else ""
    raw = json.dumps([str(logs.resolve()), st.st_size, st.st_mtime, rates, seed, rate_method, code, frozen], sort_keys=True)
    return hashlib.sha1(raw.encode()).hexdigest()[:12]


def prepare_dataset(logs_dir: str | Path, understand: Callable[[str], QueryInfo], get_docs: Callable[[list[str]], dict[str, dict[str, Any]]],
                    cache_dir: str | Path = "var/ranking_cache", rates: dict[str, float] | None = None, seed: int = 0,
                    rate_method: str = "bayes", progress: bool = True, fixed_builder: FeatureBuilder | None = None) -> LogDataset:
    """`fixed_builder`: the feature state of a model that served these logs (`--features-from`);
    it is reused instead of refit, and the vectors that model logged are used as they are."""
    t0 = time.perf_counter()
    logs = Path(logs_dir) / "logs" / "impressions.jsonl"
    if not logs.exists():
        logs = Path(logs_dir) / "impressions.jsonl"
    if not logs.exists():
        raise FileNotFoundError(f"no impressions.jsonl under {logs_dir} (expected {logs_dir}/logs/impressions.jsonl)")
    rates = dict(rates or DEFAULT_RATES)
    if fixed_builder is not None:
        rate_method = fixed_builder.rate_method
    cache = Path(cache_dir) / _cache_key(logs, rates, seed, rate_method, fixed_builder)
    state_path = cache / "behaviour_state.json"
    if (cache / "data.npz").exists():
        z = np.load(cache / "data.npz", allow_pickle=False)
        builder = FeatureBuilder.from_dict(json.loads((cache / "features.json").read_text(encoding="utf-8")))
        splits = {}
        for s in ("train", "validation", "test"):
            splits[s] = TabularData(z[f"{s}_dense"], z[f"{s}_sparse"], {"ctr": z[f"{s}_ctr"], "cvr": z[f"{s}_cvr"]}, z[f"{s}_pos"],
                                    {"user": z[f"{s}_user"], "query": z[f"{s}_query"]})
        if progress:
            print(f"features: cached {cache} ({', '.join(f'{k} {len(v)}' for k, v in splits.items())} impressions)", flush=True)
    else:
        if progress:
            print(f"features: replaying {logs} (sample rates {rates}) …", flush=True)
        vids: set[str] = set()
        with open(logs, encoding="utf-8") as f:
            for line in f:
                i = line.find('"video_id": "')
                vids.add(line[i + 13 : line.index('"', i + 13)] if i >= 0 else json.loads(line)["video_id"])
        docs = get_docs(sorted(vids))
        rows, state = replay_impressions(logs, understand, docs, rates, seed)
        by = {s: [r for r in rows if r.split == s] for s in ("train", "validation", "test")}
        if not by["train"] or not by["test"]:
            raise ValueError(f"{logs}: need train and test impressions (got {({k: len(v) for k, v in by.items()})})")
        if fixed_builder is not None:
            # the serving model's feature state, except the example-age reference: that is this training run's
            builder = FeatureBuilder.from_dict(fixed_builder.to_dict())
            builder.example_age_ref = max(r.context.now_ts for r in by["train"])
        else:
            builder = FeatureBuilder(rate_method).fit([r.context for r in by["train"]])
        splits = {s: _tabular(v, builder, use_logged=fixed_builder is not None) for s, v in by.items()}
        if progress and fixed_builder is not None:
            print(f"features: {sum(r.logged_vector is not None for r in rows)} impressions carry the serving model's logged vector", flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for s, d in splits.items():
            arrays.update({f"{s}_dense": d.dense, f"{s}_sparse": d.sparse, f"{s}_ctr": d.labels["ctr"], f"{s}_cvr": d.labels["cvr"],
                           f"{s}_pos": d.position, f"{s}_user": d.groups["user"].astype(str), f"{s}_query": d.groups["query"].astype(str)})
        tmp = cache / f"data.tmp{os.getpid()}.npz"
        np.savez(tmp, **arrays)
        (cache / "features.json").write_text(json.dumps(builder.to_dict(), ensure_ascii=False), encoding="utf-8")
        state.save(state_path)
        os.replace(tmp, cache / "data.npz")
        if progress:
            print(f"features: {', '.join(f'{k} {len(v)}' for k, v in splits.items())} impressions, "
                  f"{len(builder.dense_names())} dense + {len(builder.vocabs)} sparse features, "
                  f"{time.perf_counter() - t0:.0f}s → cached in {cache}", flush=True)
    schema = InputSchema(builder.dense_names(), {k: len(v) for k, v in builder.vocabs.items()}, ["ctr", "cvr"], N_POSITIONS,
                         {"rate_method": builder.rate_method})
    return LogDataset(builder, schema, splits, state_path, time.perf_counter() - t0)


# The comparison rows: (label, model, training mode, loss, weighting, params)
SMALL = {"embed_dim": 8}
COMPARE_RUNS: list[dict[str, Any]] = [
    {"label": "DeepFM", "model": "deepfm", "mode": "single-task CTR", "loss": "independent", "weighting": "-",
     "params": {**SMALL, "hidden": [64, 32]}},
    {"label": "MLP", "model": "single_task", "mode": "single-task CTR + CVR on clicks", "loss": "independent", "weighting": "-",
     "params": {**SMALL, "hidden": [64, 32]}},
    {"label": "Share-Bottom", "model": "shared_bottom", "mode": "multi-task CTR+CTCVR", "loss": "esmm", "weighting": "fixed",
     "params": {**SMALL, "bottom_hidden": [64, 32], "tower_hidden": [16]}},
    {"label": "ESMM", "model": "esmm", "mode": "multi-task CTR+CTCVR", "loss": "esmm", "weighting": "fixed",
     "params": {**SMALL, "tower_hidden": [64, 32]}},
    {"label": "MMoE", "model": "mmoe", "mode": "multi-task CTR+CTCVR", "loss": "esmm", "weighting": "fixed",
     "params": {**SMALL, "n_experts": 4, "expert_hidden": [32], "tower_hidden": [16]}},
    {"label": "MMoE", "model": "mmoe", "mode": "multi-task CTR+CTCVR", "loss": "esmm", "weighting": "uwl",
     "params": {**SMALL, "n_experts": 4, "expert_hidden": [32], "tower_hidden": [16]}},
    {"label": "MMoE -pos", "model": "mmoe", "mode": "multi-task, no position tower", "loss": "esmm", "weighting": "uwl",
     "params": {**SMALL, "n_experts": 4, "expert_hidden": [32], "tower_hidden": [16], "position_tower": False}},
    {"label": "PLE", "model": "ple", "mode": "multi-task CTR+CTCVR", "loss": "esmm", "weighting": "uwl",
     "params": {**SMALL, "n_levels": 2, "n_specific": 1, "n_shared": 2, "expert_hidden": [32], "tower_hidden": [16]}},
]


def serving_latency_ms(model: Any, dense_dim: int, sparse_vocab: dict[str, int], n: int = 500, reps: int = 30, threads: int = 1) -> float:
    """Median time to score one batch of n candidates (model forward only, 1 thread)."""
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    batch = {"dense": torch.from_numpy(rng.random((n, dense_dim), dtype=np.float32)),
             "sparse": torch.from_numpy(np.stack([rng.integers(0, max(1, v), n) for v in sparse_vocab.values()], axis=1).astype(np.int64))}
    model.eval()
    times = []
    with torch.no_grad():
        for _ in range(reps + 3):
            t = time.perf_counter()
            model(batch, with_position=False)
            times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times[3:]))


def run_one(spec: dict[str, Any], ds: LogDataset, seed: int, epochs: int, threads: int) -> tuple[dict[str, Any], Any]:
    tr, va, te = ds.splits["train"], ds.splits["validation"], ds.splits["test"]
    cfg = TrainConfig(loss=spec["loss"], weighting="fixed" if spec["weighting"] == "-" else spec["weighting"], epochs=epochs,
                      batch_size=1024, lr=2e-3, seed=seed, num_threads=threads, patience=1)
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"model": spec["label"], "arch": spec["model"], "mode": spec["mode"], "weighting": spec["weighting"], "seed": seed}
    models = []
    if spec["loss"] == "independent":
        tasks = ["ctr"] if spec["model"] == "deepfm" else ["ctr", "cvr"]
        for t in tasks:
            s1 = InputSchema(ds.schema.dense, ds.schema.sparse, [t], ds.schema.n_positions, ds.schema.extra)
            c1 = TrainConfig(**{**cfg.__dict__, "clicked_only": t == "cvr"})
            res = train_model(build_model(spec["model"], s1, **spec["params"]), tr, va, c1)
            m = evaluate(res.model, te, c1, groups=(t == "ctr"))
            rec.update(m)
            models.append(res.model)
    else:
        res = train_model(build_model(spec["model"], ds.schema, **spec["params"]), tr, va, cfg)
        rec.update(evaluate(res.model, te, cfg, groups=True))
        rec["learned_weights"] = res.task_weights if spec["weighting"] == "uwl" else None
        models.append(res.model)
    rec["train_seconds"] = time.perf_counter() - t0
    rec["serving_ms_500"] = sum(serving_latency_ms(m, len(ds.schema.dense), ds.schema.sparse, threads=1) for m in models)
    return rec, models[0]


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ["auc_ctr", "auc_cvr", "gauc_ctr_user", "gauc_ctr_query", "train_seconds", "serving_ms_500"]
    out, seen = [], []
    for r in runs:
        k = (r["model"], r["mode"], r["weighting"])
        if k not in seen:
            seen.append(k)
    for k in seen:
        rs = [r for r in runs if (r["model"], r["mode"], r["weighting"]) == k]
        row = {"model": k[0], "mode": k[1], "weighting": k[2], "seeds": len(rs)}
        for key in keys:
            v = [r[key] for r in rs if key in r and r[key] == r[key]]
            row[key] = [float(np.mean(v)), float(np.std(v))] if v else None
        out.append(row)
    return out


def compare_table(summary: list[dict[str, Any]]) -> str:
    def f(v: Any, d: int = 4) -> str:
        return "—" if v is None else f"{v[0]:.{d}f}±{v[1]:.{d}f}"

    head = f"{'model':13s} {'training mode':31s} {'weights':7s} {'CTR-AUC':>15s} {'CVR-AUC':>15s} {'GAUC user':>15s} {'GAUC query':>15s} {'train s':>11s} {'serve ms':>11s}"
    lines = [head]
    for s in summary:
        lines.append(f"{s['model']:13s} {s['mode']:31s} {s['weighting']:7s} {f(s['auc_ctr']):>15s} {f(s['auc_cvr']):>15s} "
                     f"{f(s['gauc_ctr_user']):>15s} {f(s['gauc_ctr_query']):>15s} {f(s['train_seconds'], 1):>11s} {f(s['serving_ms_500'], 2):>11s}")
    return "\n".join(lines)
