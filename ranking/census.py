"""The public multi-task benchmark of the MMoE paper (Ma et al., KDD 2018, §6.3): UCI
census-income (KDD), tasks income > 50K and marital status = never married.

Only the original *test* file (99,762 rows) is available here, so we split it ourselves with a
fixed seed (70/15/15 train/validation/test). The published AUCs were measured on the full data
(199,523 training rows), so ours are not strictly comparable: fewer training rows, another
test set. The same trainer and models as the search ranking run here unchanged.
"""
from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .features import FrequencyVocab
from .models import InputSchema, build_model
from .trainer import TabularData, TrainConfig, evaluate, train_model

CENSUS_FILE = "multitask/census_income/census-income.test.gz"
# Columns of census-income.names (42 with the label). Numeric ones are log-scaled and standardized.
NUMERIC = {0: "age", 5: "wage_per_hour", 16: "capital_gains", 17: "capital_losses", 18: "dividends",
           30: "num_persons_worked_for_employer", 39: "weeks_worked"}
INSTANCE_WEIGHT, MARITAL, INCOME = 24, 7, 41
PUBLISHED = {"source": "Ma et al., KDD 2018 (MMoE), census-income group 1, full data",
             "mmoe": {"income": 0.945, "marital": 0.993}}
SPLIT_SEED = 2018


def load_census(shared_data: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows as strings [N, 42], income label, never-married label."""
    path = Path(shared_data) / CENSUS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass --shared-data or set MVSEARCH_SHARED_DATA")
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            parts = [p.strip() for p in line.strip().rstrip(".").split(",")]
            if len(parts) == 42:
                rows.append(parts)
    if not rows:
        raise ValueError(f"{path}: no 42-column rows")
    a = np.array(rows, dtype=object)
    income = (a[:, INCOME] == "50000+").astype(np.float32)
    marital = (a[:, MARITAL] == "Never married").astype(np.float32)
    return a, income, marital


def split_indices(n: int, seed: int = SPLIT_SEED, frac: tuple[float, float] = (0.7, 0.15)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    a, b = int(frac[0] * n), int((frac[0] + frac[1]) * n)
    return perm[:a], perm[a:b], perm[b:]


def census_tables(shared_data: str | Path) -> tuple[InputSchema, TabularData, TabularData, TabularData]:
    rows, income, marital = load_census(shared_data)
    tr, va, te = split_indices(len(rows))
    cat_cols = [c for c in range(42) if c not in NUMERIC and c not in (INSTANCE_WEIGHT, MARITAL, INCOME)]
    num = np.stack([np.log1p(rows[:, c].astype(np.float64).clip(min=0)) for c in NUMERIC], axis=1)
    mu, sd = num[tr].mean(0), num[tr].std(0) + 1e-6     # statistics from train only
    dense = ((num - mu) / sd).astype(np.float32)
    vocabs = {f"c{c}": FrequencyVocab.fit(rows[tr, c], min_count=3) for c in cat_cols}
    sparse = np.stack([vocabs[f"c{c}"].lookup_many(rows[:, c]) for c in cat_cols], axis=1)
    schema = InputSchema([NUMERIC[c] for c in NUMERIC], {k: len(v) for k, v in vocabs.items()}, ["income", "marital"])
    full = TabularData(dense, sparse, {"income": income, "marital": marital})
    return schema, full.subset(tr), full.subset(va), full.subset(te)


# (label, model, params). Single-task = one model per task.
CENSUS_MODELS: list[tuple[str, str, dict[str, Any]]] = [
    ("single-task", "single_task", {"hidden": [64, 32]}),
    ("share-bottom", "shared_bottom", {"bottom_hidden": [64, 32], "tower_hidden": [16]}),
    ("mmoe", "mmoe", {"n_experts": 8, "expert_hidden": [32], "tower_hidden": [16]}),
    ("ple", "ple", {"n_levels": 2, "n_specific": 2, "n_shared": 2, "expert_hidden": [32], "tower_hidden": [16]}),
]


def run_census(shared_data: str | Path, seeds: list[int], epochs: int = 8, num_threads: int = 1,
               weighting: str = "fixed", progress: bool = True) -> dict[str, Any]:
    schema, train, val, test = census_tables(shared_data)
    runs: list[dict[str, Any]] = []
    for label, name, params in CENSUS_MODELS:
        for seed in seeds:
            cfg = TrainConfig(loss="independent", weighting=weighting, epochs=epochs, seed=seed, num_threads=num_threads,
                              click_task="", eval_masks_click=False, batch_size=512)
            t0 = time.perf_counter()
            res: dict[str, float] = {}
            if name == "single_task":
                for task in schema.tasks:
                    s1 = InputSchema(schema.dense, schema.sparse, [task])
                    tr = train_model(build_model(name, s1, **params), train, val, cfg)
                    res.update(evaluate(tr.model, test, cfg))
            else:
                tr = train_model(build_model(name, schema, **params), train, val, cfg)
                res.update(evaluate(tr.model, test, cfg))
            rec = {"model": label, "seed": seed, "income_auc": res["auc_income"], "marital_auc": res["auc_marital"],
                   "train_seconds": round(time.perf_counter() - t0, 1)}
            runs.append(rec)
            if progress:
                print(f"  {label:13s} seed {seed}: income {rec['income_auc']:.4f}  marital {rec['marital_auc']:.4f}  ({rec['train_seconds']}s)", flush=True)
    summary = []
    for label, _, _ in CENSUS_MODELS:
        rs = [r for r in runs if r["model"] == label]
        summary.append({"model": label, **{k: [round(float(np.mean([r[k] for r in rs])), 4), round(float(np.std([r[k] for r in rs])), 4)]
                                         for k in ("income_auc", "marital_auc", "train_seconds")}})
    return {"data": CENSUS_FILE, "rows": {"train": len(train), "validation": len(val), "test": len(test)},
            "split": f"our own random 70/15/15 split of the census-income TEST file (seed {SPLIT_SEED}); the paper trains on the "
                     "199,523-row training file and tests on this whole file, so figures are close but not comparable",
            "weighting": weighting, "seeds": seeds, "epochs": epochs, "published": PUBLISHED, "summary": summary, "runs": runs}


def census_table(result: dict[str, Any]) -> str:
    lines = [f"{'model':14s} {'income AUC':>16s} {'marital AUC':>16s} {'train s':>8s}"]
    for s in result["summary"]:
        lines.append(f"{s['model']:14s} {s['income_auc'][0]:.4f} ± {s['income_auc'][1]:.4f}  {s['marital_auc'][0]:.4f} ± {s['marital_auc'][1]:.4f} "
                     f"{s['train_seconds'][0]:8.1f}")
    p = result["published"]["mmoe"]
    lines.append(f"{'published MMoE':14s} {p['income']:>16.3f} {p['marital']:>16.3f}   (full data, paper's split)")
    lines.append(f"split: {result['split']}")
    return "\n".join(lines)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)
