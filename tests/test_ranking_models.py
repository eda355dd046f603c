"""Ranking models and the shared trainer on tiny synthetic data (fast, 1 thread)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ranking.models import MODELS, InputSchema, build_model
from ranking.trainer import TabularData, TrainConfig, UncertaintyWeighting, evaluate, train_model

torch.set_num_threads(1)


def synthetic(n: int = 4000, seed: int = 0) -> tuple[InputSchema, TabularData]:
    """Clicks depend on dense[0], a sparse id and the position; valid plays on dense[1] given a click."""
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n, 4)).astype(np.float32)
    sparse = np.stack([rng.integers(0, 10, n), rng.integers(0, 5, n)], axis=1)
    position = rng.integers(1, 11, n)
    id_effect = np.linspace(-1, 1, 10)[sparse[:, 0]]
    p_click = 1 / (1 + np.exp(-(1.5 * dense[:, 0] + id_effect - 0.2 * position)))
    click = (rng.random(n) < p_click).astype(np.float32)
    p_valid = 1 / (1 + np.exp(-(2.0 * dense[:, 1])))
    valid = (click * (rng.random(n) < p_valid)).astype(np.float32)
    schema = InputSchema(["d0", "d1", "d2", "d3"], {"s0": 10, "s1": 5}, ["ctr", "cvr"], n_positions=10)
    return schema, TabularData(dense, sparse, {"ctr": click, "cvr": valid}, position,
                               {"user": rng.integers(0, 50, n)})


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shapes(name):
    schema, data = synthetic(64)
    if name in ("deepfm", "single_task"):
        schema = InputSchema(schema.dense, schema.sparse, ["ctr"], schema.n_positions)
    model = build_model(name, schema)
    out = model(data.batch(slice(0, 32)), with_position=True)
    assert set(out) == set(schema.tasks)
    assert all(v.shape == (32,) for v in out.values())


@pytest.mark.parametrize("name,loss,weighting", [("deepfm", "independent", "fixed"), ("single_task", "independent", "fixed"),
                                                  ("shared_bottom", "esmm", "fixed"), ("esmm", "esmm", "fixed"),
                                                  ("mmoe", "esmm", "uwl"), ("ple", "esmm", "fixed")])
def test_tiny_training_beats_chance(name, loss, weighting):
    schema, data = synthetic()
    if name in ("deepfm", "single_task"):
        schema = InputSchema(schema.dense, schema.sparse, ["ctr"], schema.n_positions)
    idx = np.arange(len(data))
    train, val = data.subset(idx[:3000]), data.subset(idx[3000:])
    cfg = TrainConfig(loss=loss, weighting=weighting, epochs=4, batch_size=128, lr=5e-3, seed=0)
    res = train_model(build_model(name, schema, embed_dim=4), train, val, cfg)
    m = evaluate(res.model, val, cfg, groups=True)
    assert m["auc_ctr"] > 0.7, m
    if "cvr" in schema.tasks:
        assert m["auc_cvr"] > 0.7, m          # conversion given click, from the CTCVR loss alone
    assert 0.5 < m["gauc_ctr_user"] <= 1.0


def test_single_task_cvr_trains_on_clicked_rows_only():
    schema, data = synthetic()
    schema = InputSchema(schema.dense, schema.sparse, ["cvr"], schema.n_positions)
    cfg = TrainConfig(epochs=3, batch_size=128, lr=5e-3, clicked_only=True)
    res = train_model(build_model("single_task", schema, embed_dim=4), data.subset(np.arange(3000)), data.subset(np.arange(3000, 4000)), cfg)
    assert res.val_metrics["auc_cvr"] > 0.7


def test_uwl_parameters_learn():
    schema, data = synthetic()
    cfg = TrainConfig(loss="esmm", weighting="uwl", epochs=3, batch_size=128, lr=1e-2)
    res = train_model(build_model("mmoe", schema, embed_dim=4), data.subset(np.arange(3000)), data.subset(np.arange(3000, 4000)), cfg)
    assert res.task_weights != {"ctr": 1.0, "cvr": 1.0}
    assert all(abs(w - 1.0) > 1e-3 for w in res.task_weights.values()), res.task_weights
    # the learned weights follow the losses: exp(−s) is larger for the task with the smaller loss
    uwl = UncertaintyWeighting(["a", "b"])
    opt = torch.optim.SGD(uwl.parameters(), lr=0.1)
    for _ in range(200):
        loss = uwl({"a": torch.tensor(0.1), "b": torch.tensor(2.0)})
        opt.zero_grad(); loss.backward(); opt.step()
    w = uwl.weights()
    assert w["a"] > 2 and w["b"] < 0.5      # optimum exp(−s) = 1/(2L): 5 and 0.25


def test_position_tower_only_in_training_mode():
    schema, data = synthetic(64)
    model = build_model("mmoe", schema, embed_dim=4)
    with torch.no_grad():
        model.heads.position.out.weight.fill_(1.0)   # make the tower's effect visible
    b1, b2 = data.batch(slice(0, 16)), data.batch(slice(0, 16))
    b2["position"] = torch.full_like(b1["position"], 9)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(b1)["ctr"], model(b2)["ctr"])                 # serving: position has no effect
        no_pos = {k: v for k, v in b1.items() if k != "position"}
        assert torch.equal(model(b1)["ctr"], model(no_pos)["ctr"])           # nor its absence
        assert not torch.equal(model(b1, with_position=True)["ctr"], model(b2, with_position=True)["ctr"])
        assert torch.equal(model(b1, with_position=True)["cvr"], model(b2, with_position=True)["cvr"])  # only the click logit


def test_bad_config_errors():
    schema, data = synthetic(64)
    with pytest.raises(ValueError, match="unknown ranking model"):
        build_model("xgboost", schema)
    with pytest.raises(ValueError, match="weighting"):
        train_model(build_model("mmoe", schema), data, data, TrainConfig(weighting="magic", epochs=1))


@pytest.mark.parametrize("hidden", [[16], [16, 8]])
def test_fused_experts_at_inference_equal_the_expert_mlps(hidden):
    from ranking.models.layers import Experts

    torch.manual_seed(0)
    ex = Experts(12, 3, hidden, dropout=0.1)
    x = torch.randn(50, 12)
    ex.eval()
    ref = torch.stack([e(x) for e in ex.experts], dim=1)
    with torch.no_grad():
        fused = ex(x)
        assert torch.allclose(fused, ref, atol=1e-6) and fused.shape == (50, 3, hidden[-1])
        ex.experts[1][0].weight.add_(1.0)                      # new weights: the cache must not serve the old ones
        assert torch.allclose(ex(x), torch.stack([e(x) for e in ex.experts], dim=1), atol=1e-6)
    ex.train()
    assert ex(x).requires_grad                                 # training keeps the per-expert path
