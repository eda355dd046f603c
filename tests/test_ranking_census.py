"""The census-income benchmark on a slice of the real data (the full run is `mvsearch eval census`)."""
from __future__ import annotations

import numpy as np

from conftest import require_or_skip
from ranking.census import CENSUS_FILE, census_tables, split_indices
from ranking.models import build_model
from ranking.trainer import TrainConfig, evaluate, train_model


def test_split_is_fixed_and_disjoint():
    a = split_indices(1000)
    b = split_indices(1000)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len(set(a[0]) | set(a[1]) | set(a[2])) == 1000 and len(a[0]) == 700


def test_mmoe_learns_both_census_tasks(shared_data):
    require_or_skip((shared_data / CENSUS_FILE).exists(), f"needs {CENSUS_FILE}")
    schema, train, val, test = census_tables(shared_data)
    assert schema.tasks == ["income", "marital"] and len(train) > 60000
    assert 0.03 < train.labels["income"].mean() < 0.1 and 0.3 < train.labels["marital"].mean() < 0.6
    cfg = TrainConfig(epochs=3, batch_size=256, lr=5e-3, click_task="", eval_masks_click=False)
    small = train.subset(np.arange(8000))
    res = train_model(build_model("mmoe", schema, n_experts=4, expert_hidden=[16], tower_hidden=[8]), small, val.subset(np.arange(3000)), cfg)
    m = evaluate(res.model, test.subset(np.arange(5000)), cfg)
    assert m["auc_income"] > 0.85 and m["auc_marital"] > 0.95, m
