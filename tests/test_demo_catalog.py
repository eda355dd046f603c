import json
from collections import Counter

from search.catalog import read_catalog
from search.demo_catalog import write_demo_catalog


def test_demo_catalog_is_valid_deterministic_and_has_the_traps(tmp_path):
    a = write_demo_catalog(tmp_path / "a" / "docs.jsonl", size=3000, seed=11, progress=False)
    b = write_demo_catalog(tmp_path / "b" / "docs.jsonl", size=3000, seed=11, progress=False)
    assert a.read_bytes() == b.read_bytes()
    videos, report = read_catalog(a)
    assert report.malformed == 0 and len(videos) == 3000
    cats = Counter(v.category for v in videos)
    assert set(cats) == {"mv", "live", "cover", "dance", "tutorial", "reaction", "variety", "fan_edit", "lyric", "other"}
    # User uploads with no structured metadata although the title names a song.
    assert sum(1 for v in videos if not v.artists and not v.songs and v.category in ("cover", "live", "dance")) > 30
    # Unrelated videos whose title contains a song title (the 朗朗晴天 trap).
    from search.kb import load_kb
    titles = {s["title"] for s in load_kb().songs if len(s["title"]) >= 2}
    traps = [v for v in videos if v.category == "other" and not v.songs and any(t in v.title for t in titles)]
    assert len(traps) > 20
    # Covers by many uploaders, popularity heavy-tailed.
    assert len({v.uploader for v in videos if v.category == "cover"}) > 100
    plays = sorted((v.play_count for v in videos), reverse=True)
    assert plays[0] > 100 * plays[len(plays) // 2]
    assert (tmp_path / "a" / "dictionary.txt").exists()


def test_songs_sharing_a_title_exist_in_kb():
    from search.kb import load_kb

    kb = load_kb()
    shared = [t for t, arts in kb.artists_by_song_title.items() if len(set(arts)) >= 2]
    assert len(shared) > 100
