"""The bundled knowledge base is reproducible from ../shared/data (runs in CI, skips where
the shared data is absent)."""
import gzip
import json

from search.kb import BUNDLED
from search.kb.build import build_kb


def test_bundled_kb_rebuilds_identically(shared_data, tmp_path):
    out = tmp_path / "kb.json.gz"
    build_kb(shared_data, out)
    with gzip.open(out, "rt", encoding="utf-8") as a, gzip.open(BUNDLED, "rt", encoding="utf-8") as b:
        assert json.load(a) == json.load(b)


def test_curated_facts_are_in_the_kb():
    from search.kb import load_kb

    kb = load_kb()
    jay = kb.artist_by_name["周杰伦"]
    assert "Jay Chou" in jay["english"] and jay["pinyin"] == "zhoujielun" and jay["initials"] == "zjl"
    she = kb.artist_by_name["S.H.E"]
    assert set(she["members"]) == {"任家萱", "田馥甄", "陈嘉桦"}
    assert "S.H.E" in kb.artist_by_name["田馥甄"]["groups"]
    assert any(a in kb.artist_by_name["田馥甄"]["english"] + kb.artist_by_name["田馥甄"]["aliases"] for a in ("Hebe", "hebe"))
    assert kb.shows and kb.lyrics
