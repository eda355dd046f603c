import json

import pytest

from search.indexer import CURRENT, build_index, current_bundle, read_manifest


def test_rebuild_switches_atomically_and_keeps_previous(tmp_path, catalog_path):
    d = tmp_path / "ix"
    r1 = build_index(catalog_path, d, show_progress=False)
    assert current_bundle(d) == r1.bundle_dir
    r2 = build_index(catalog_path, d, show_progress=False)
    assert current_bundle(d) == r2.bundle_dir and r1.bundle_dir.exists()  # previous kept for rollback
    r3 = build_index(catalog_path, d, show_progress=False)
    assert not r1.bundle_dir.exists() and r2.bundle_dir.exists()
    m = read_manifest(r3.bundle_dir)
    assert m["docs"] == r3.docs and m["engine"] == "embedded" and m["index_config_version"].startswith("v")


def test_failed_build_leaves_current_version_serving(tmp_path, catalog_path):
    d = tmp_path / "ix"
    good = build_index(catalog_path, d, show_progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{broken\n" + json.dumps({"video_id": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no valid videos"):
        build_index(bad, d, show_progress=False)
    assert current_bundle(d) == good.bundle_dir
    assert not [p for p in (d / "versions").iterdir() if p.name.startswith(".")]  # temp dir cleaned


def test_malformed_lines_counted_in_manifest(tmp_path, catalog_path):
    cat = tmp_path / "docs.jsonl"
    cat.write_text(catalog_path.read_text(encoding="utf-8") + "not json\n", encoding="utf-8")
    r = build_index(cat, tmp_path / "ix", show_progress=False)
    assert r.report.malformed == 1 and r.report.errors[0].line == len(cat.read_text(encoding="utf-8").splitlines())
    assert read_manifest(r.bundle_dir)["malformed_lines"] == 1


def test_pointer_is_a_single_line(embedded_index):
    assert (embedded_index / CURRENT).read_text(encoding="utf-8").count("\n") == 1
