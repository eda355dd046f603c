"""The comparison path end to end on a tiny log: prepare (replay → features → cache), train,
evaluate, summarize, print, and the model file written by `ranking train`."""
from __future__ import annotations

import math

from ranking.compare import COMPARE_RUNS, compare_table, prepare_dataset, run_one, summarize
from ranking.learned import LearnedRanker, save_model

from test_ranking_features import DOCS, understand, write_log


def test_prepare_train_compare_and_cache(tmp_path, capsys):
    (tmp_path / "sim" / "logs").mkdir(parents=True)
    write_log(tmp_path / "sim" / "logs" / "impressions.jsonl")
    get_docs = lambda ids: {i: DOCS[i] for i in ids if i in DOCS}  # noqa: E731
    ds = prepare_dataset(tmp_path / "sim", understand, get_docs, tmp_path / "cache", rates={"train": 1, "validation": 1, "test": 1})
    assert len(ds.splits["train"]) == 5 and len(ds.splits["test"]) == 3 and ds.state_path.exists()
    again = prepare_dataset(tmp_path / "sim", understand, get_docs, tmp_path / "cache", rates={"train": 1, "validation": 1, "test": 1})
    assert "cached" in capsys.readouterr().out
    assert (again.splits["test"].dense == ds.splits["test"].dense).all()
    runs = []
    for spec in COMPARE_RUNS:
        if spec["model"] in ("deepfm", "mmoe") or spec["model"] == "single_task":
            rec, model = run_one(spec, ds, seed=0, epochs=1, threads=1)
            assert 0.0 <= rec["auc_ctr"] <= 1.0 and rec["serving_ms_500"] > 0 and rec["train_seconds"] > 0
            runs.append(rec)
    table = compare_table(summarize(runs))
    assert "DeepFM" in table and "MMoE" in table and "CTR-AUC" in table
    # the mmoe model file serves through the learned stage
    path = save_model(tmp_path / "m.pt", model, ds.builder)
    r = LearnedRanker({"model_path": str(path), "feature_store": str(ds.state_path)})
    assert r.model is not None and not math.isnan(float(next(r.model.parameters()).detach().sum()))
