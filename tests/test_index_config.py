import json
import math

from index_config import load_index_config


def test_version_changes_with_the_definition(tmp_path):
    base = load_index_config()
    raw = json.loads((base.raw and json.dumps(base.raw)))
    raw["text_fields"]["title"]["boost"] = 9.0
    p = tmp_path / "index.json"
    p.write_text(json.dumps(raw), encoding="utf-8")
    changed = load_index_config(p)
    assert changed.version != base.version
    same = tmp_path / "same.json"
    same.write_text(json.dumps(base.raw), encoding="utf-8")
    assert load_index_config(same).version == base.version


def test_hot_weight_encodes_the_hotness_factor():
    cfg = load_index_config()
    w = cfg.recall["hotness"]["weight"]
    for plays in (0, 10, 12345, 10**8):
        # tantivy: score * log2(2 + x); ES ln2p: score * ln(2 + x) = const * log2(2 + x)
        assert math.isclose(math.log2(2 + cfg.hot_weight(plays)), 1 + w * math.log10(1 + plays), rel_tol=1e-9)


def test_freshness_is_es_gauss_decay():
    cfg = load_index_config()
    fr = cfg.recall["freshness"]
    w = fr["weight"]
    assert math.isclose(cfg.freshness_factor(0), 1.0)
    assert math.isclose(cfg.freshness_factor(fr["offset_days"]), 1.0)
    # At offset + scale the gauss function equals `decay` (ES definition).
    assert math.isclose(cfg.freshness_factor(fr["offset_days"] + fr["scale_days"]), (1 - w) + w * fr["decay"])
