import json

from search.catalog import read_catalog


def test_malformed_lines_reported_with_numbers(tmp_path):
    p = tmp_path / "docs.jsonl"
    lines = [
        json.dumps({"video_id": "a", "title": "周杰伦 晴天", "x_extra": 1}, ensure_ascii=False),
        "{not json",
        json.dumps({"video_id": "b"}),                        # missing title
        json.dumps({"video_id": "c", "title": "t", "category": "movie"}),  # bad enum
        "",
        json.dumps([1, 2]),
        json.dumps({"video_id": "d", "title": "ok", "play_count": -5}),
        json.dumps({"video_id": "a", "title": "周杰伦 晴天 (re-upload)"}, ensure_ascii=False),
    ]
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    videos, report = read_catalog(p)
    assert sorted(v.video_id for v in videos) == ["a"]
    assert [e.line for e in report.errors] == [2, 3, 4, 6, 7]
    assert "title" in report.errors[1].message and "category" in report.errors[2].message
    assert report.duplicates and report.duplicates[0].line == 8
    a = videos[0]
    assert a.title.endswith("(re-upload)")  # the later record wins
    assert "line 2" in report.summary()


def test_extra_fields_kept_and_defaults(tmp_path):
    p = tmp_path / "docs.jsonl"
    p.write_text(json.dumps({"video_id": "a", "title": "x", "cover_url": "u"}) + "\n", encoding="utf-8")
    (v,), _ = read_catalog(p)
    assert v.model_dump()["cover_url"] == "u"
    assert v.artists == [] and v.category == "other" and v.play_count == 0
