"""Shared fixtures: a small catalog (generated demo videos + hand-written cases for the
article's examples), an embedded index built from it, a pipeline over it, and a real
Elasticsearch started by the harness for the `es` tests."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = Path(os.environ.get("MVSEARCH_SHARED_DATA", ROOT.parent / "shared" / "data"))
REFERENCE_TIME = "2026-11-01T12:00:00+08:00"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_or_skip(ok: bool, reason: str) -> None:
    """Skip locally with a reason; under CI=true a missing dependency is a failure."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    require_or_skip((SHARED_DATA / "music_kb").is_dir(), f"needs ../shared/data (not found at {SHARED_DATA})")
    return SHARED_DATA


@pytest.fixture(scope="session")
def catalog_path(tmp_path_factory) -> Path:
    from search.demo_catalog import write_demo_catalog

    d = tmp_path_factory.mktemp("catalog")
    out = write_demo_catalog(d / "docs.jsonl", size=800, seed=3, progress=False)
    with open(out, "a", encoding="utf-8") as f:
        f.write((FIXTURES / "mini_catalog.jsonl").read_text(encoding="utf-8"))
    return out


@pytest.fixture(scope="session")
def embedded_index(catalog_path, tmp_path_factory) -> Path:
    from search.indexer import build_index

    d = tmp_path_factory.mktemp("index")
    build_index(catalog_path, d, engine="embedded", show_progress=False)
    return d


def pipeline_config(index_dir: Path, **over):
    from search.config import load_config

    o = {"engine": {"kind": "embedded", "index_dir": str(index_dir)}, "search": {"reference_time": REFERENCE_TIME}}
    for k, v in over.items():
        o.setdefault(k, {}).update(v)
    return load_config(None, o)


@pytest.fixture(scope="session")
def pipeline(embedded_index):
    from search.pipeline import SearchPipeline

    p = SearchPipeline(pipeline_config(embedded_index))
    yield p
    p.close()


@pytest.fixture(scope="session")
def es_url(tmp_path_factory):
    from search import es_local

    ok, reason = es_available = es_local.es_available()
    require_or_skip(ok, f"Elasticsearch unavailable: {reason}")
    port = int(os.environ.get("MVSEARCH_TEST_ES_PORT", "19250"))
    cluster = es_local.start_cluster(nodes=1, http_port=port, transport_port=port + 100, heap="512m", timeout=240)
    try:
        yield cluster.urls[0]
    finally:
        cluster.stop()
