"""Index build: validate → tokenize once → per-video store → text index + vectors → switch.

A new index version is always built beside the old one and switched in only when complete:
embedded — a temp directory renamed into `versions/`, then the `CURRENT` pointer replaced
atomically; Elasticsearch — a versioned index and one atomic alias swap. Searches never
see a half-built index, and an interrupted build leaves the old version serving.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from index_config import DEFAULT_PATH as DEFAULT_INDEX_CONFIG
from index_config import IndexConfig, load_index_config
from query_understanding.records import iter_jsonl
from query_understanding.tokenize import Tokenizer

from .catalog import CatalogReport, iter_catalog
from .documents import embedding_tokens, prepare_document
from .embedder import LsaEmbedder
from .kb import alias_rewrite_table, business_dictionary, load_kb, write_dictionary

CURRENT = "CURRENT"
_WEIGHTED_FIELDS = ("title", "artists", "songs", "tags", "uploader", "description")
VERSIONS = "versions"
KEEP_VERSIONS = 2


@dataclass
class BuildResult:
    version_name: str
    bundle_dir: Path
    engine: str
    docs: int
    report: CatalogReport
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
    os.replace(tmp, path)


def current_bundle(index_dir: str | Path) -> Path:
    """The directory of the version that `CURRENT` points to."""
    index_dir = Path(index_dir)
    ptr = index_dir / CURRENT
    if not ptr.exists():
        raise FileNotFoundError(f"no index at {index_dir} (missing {CURRENT}); build one with `mvsearch index build`")
    return index_dir / VERSIONS / ptr.read_text(encoding="utf-8").strip()


def bundle_index_config(bundle: Path) -> IndexConfig:
    p = bundle / "index_config.json"
    return load_index_config(p if p.exists() else None)


def read_manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def _stage_docs(catalog: Path, db: Path, tok: Tokenizer, cfg: IndexConfig, report: CatalogReport, progress) -> int:
    """Validate and tokenize every record into the per-video store (one transaction)."""
    conn = sqlite3.connect(db)
    seen: dict[str, int] = {}
    try:
        with conn:
            conn.execute("CREATE TABLE videos (video_id TEXT PRIMARY KEY, record TEXT NOT NULL, fields TEXT NOT NULL)")
            batch: list[tuple[str, str, str]] = []
            for no, video in iter_catalog(catalog, report):
                if video.video_id in seen:
                    from .catalog import CatalogError
                    report.duplicates.append(CatalogError(no, f"video_id {video.video_id!r} already seen on line {seen[video.video_id]}; this later record kept"))
                seen[video.video_id] = no
                doc = prepare_document(video, tok, cfg)
                batch.append((video.video_id, video.model_dump_json(), json.dumps(doc, ensure_ascii=False)))
                if len(batch) >= 2000:
                    conn.executemany("INSERT OR REPLACE INTO videos VALUES (?,?,?)", batch)
                    batch.clear()
                    progress(report.ok)
            conn.executemany("INSERT OR REPLACE INTO videos VALUES (?,?,?)", batch)
        return int(conn.execute("SELECT COUNT(*) FROM videos").fetchone()[0])
    finally:
        conn.close()


def _iter_fields(db: Path) -> Iterator[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for (fields,) in conn.execute("SELECT fields FROM videos ORDER BY rowid"):
            yield json.loads(fields)
    finally:
        conn.close()


def build_index(catalog: str | Path, index_dir: str | Path, engine: str = "embedded", es_url: str | None = None,
                es_index: str | None = None, dictionary: str | Path | None = None, index_config: str | Path | None = None,
                show_progress: bool = True, query_log: str | Path | None = None,
                vector_model: str | Path | None = None) -> BuildResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    t0 = time.time()
    if engine not in ("embedded", "elasticsearch"):
        raise ValueError(f"unknown engine {engine!r}: use embedded or elasticsearch")
    if engine == "elasticsearch" and not es_url:
        raise ValueError("--es-url is required with --engine elasticsearch")
    catalog = Path(catalog)
    if not catalog.exists():
        raise FileNotFoundError(f"catalog not found: {catalog}")
    cfg = load_index_config(index_config)
    # The vector route's embedder: the learned two-tower model when the index definition
    # (vectors.two_tower_model) or the caller names one, else LSA. Checked before any work.
    tt = None
    vector_model = vector_model or cfg.vectors.get("two_tower_model") or None
    if vector_model:
        from .expansion.two_tower import TwoTowerEmbedder

        tt = TwoTowerEmbedder.load(vector_model)
        if tt.dims != int(cfg.vectors["dims"]):
            raise ValueError(f"two-tower model {vector_model} makes {tt.dims}-d vectors; the index expects vectors.dims = {cfg.vectors['dims']}")
    index_dir = Path(index_dir)
    (index_dir / VERSIONS).mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dt%H%M%S%f")
    version_name = f"{cfg.version}-{stamp}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{version_name}.", dir=index_dir / VERSIONS))
    report = CatalogReport()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      disable=not show_progress, transient=True) as bar:
            # One dictionary for index and queries: the bundle carries the one it was built with.
            # The bundle carries the exact index definition it was built from; the query side
            # reads it back, so queries are compiled against the fields that were indexed.
            shutil.copyfile(index_config or DEFAULT_INDEX_CONFIG, tmp / "index_config.json")
            if dictionary:
                shutil.copyfile(dictionary, tmp / "dictionary.txt")
            else:
                write_dictionary(business_dictionary(load_kb()), tmp / "dictionary.txt")
            tok = Tokenizer(tmp / "dictionary.txt")
            t_stage = bar.add_task("validate + tokenize", total=None)
            n = _stage_docs(catalog, tmp / "docstore.sqlite", tok, cfg, report, lambda k: bar.update(t_stage, completed=k))
            bar.update(t_stage, completed=n, total=n)
            if n == 0:
                raise ValueError(f"no valid videos in {catalog}:\n{report.summary()}")

            t_emb = bar.add_task("embed (LSA baseline)", total=n)
            ids, tokens = [], []
            df: Counter[str] = Counter()              # term weights' document frequencies
            titles_tok: dict[str, set[str]] = {}      # click factors, when a log is given
            for d in _iter_fields(tmp / "docstore.sqlite"):
                ids.append(d["video_id"])
                tokens.append(embedding_tokens(d))
                df.update({t for f in _WEIGHTED_FIELDS for t in d[f]})
                if query_log:
                    titles_tok[d["video_id"]] = set(d["title"])
            embedder = LsaEmbedder.fit(tokens, dims=int(cfg.vectors["dims"]))
            embedder.save(tmp / "embedder.npz")
            vectors = np.zeros((n, embedder.dims), dtype=np.float32)
            if tt is not None:
                from .expansion.two_tower import video_text_from_fields

                tt.save(tmp / "two_tower")
                bar.update(t_emb, description="embed (two-tower video tower)")
                texts = [video_text_from_fields(d) for d in _iter_fields(tmp / "docstore.sqlite")]
                for i in range(0, n, 20000):
                    vectors[i : i + 20000] = tt.encode_videos(texts[i : i + 20000])
                    bar.update(t_emb, completed=min(n, i + 20000))
                del texts
                embedder_name = tt.name
            else:
                for i in range(0, n, 20000):
                    vectors[i : i + 20000] = embedder.encode_many(tokens[i : i + 20000])
                    bar.update(t_emb, completed=min(n, i + 20000))
                embedder_name = embedder.name
            del tokens

            extra: dict[str, Any] = {}
            if engine == "embedded":
                from .engines.embedded import build_faiss, build_tantivy

                t_txt = bar.add_task("text index (tantivy)", total=n)
                def docs_with_progress() -> Iterator[dict[str, Any]]:
                    for i, d in enumerate(_iter_fields(tmp / "docstore.sqlite")):
                        if i % 5000 == 0:
                            bar.update(t_txt, completed=i)
                        yield d
                build_tantivy(tmp / "tantivy", docs_with_progress(), cfg)
                bar.update(t_txt, completed=n)
                build_faiss(tmp, ids, vectors, cfg)
            else:
                from .engines.elastic import build_es_index

                alias = es_index or cfg.name
                t_es = bar.add_task("bulk load (Elasticsearch)", total=n)
                def es_docs() -> Iterator[tuple[dict[str, Any], np.ndarray]]:
                    for i, d in enumerate(_iter_fields(tmp / "docstore.sqlite")):
                        if i % 2000 == 0:
                            bar.update(t_es, completed=i)
                        yield d, vectors[i]
                extra = build_es_index(es_url, alias, version_name, es_docs(), cfg)
                extra.update(es_url=es_url, es_alias=alias)
                bar.update(t_es, completed=n)

            # Spelling correction lexicon: entity names + priors, a character LM of this
            # catalog's titles, and query-log frequencies when a log is given.
            from query_understanding.correction import Corrector

            conn = sqlite3.connect(f"file:{tmp / 'docstore.sqlite'}?mode=ro", uri=True)
            titles = [json.loads(r)["title"] for (r,) in conn.execute("SELECT record FROM videos")]
            conn.close()
            Corrector.build(load_kb(), titles, _query_frequencies(query_log) if query_log else None).save(tmp / "correction.json.gz")
            del titles
            from query_understanding.normalize import normalize as _normalize
            from query_understanding.term_weights import TermWeighter, click_factors

            weighter = TermWeighter.from_document_frequencies(df, n)
            if query_log:
                cf = click_factors(query_log, lambda q: tok.tokenize(_normalize(q)), lambda v: titles_tok.get(v, set()))
                weighter = weighter.with_clicks(cf)
            del df, titles_tok
            weighter.save(tmp / "term_weights.json")
            _write_json_atomic(tmp / "rewrite_table.json", {"version": version_name, "source": "knowledge base aliases",
                                                           "rewrites": alias_rewrite_table(load_kb())})
            manifest = {"version_name": version_name, "index_config_version": cfg.version, "engine": engine,
                        "catalog": str(catalog.resolve()), "docs": n, "malformed_lines": report.malformed,
                        "duplicate_ids": len(report.duplicates), "embedder": embedder_name, "vector_dims": embedder.dims,
                        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}
            _write_json_atomic(tmp / "manifest.json", manifest)
        final = index_dir / VERSIONS / version_name
        os.chmod(tmp, 0o755)
        os.replace(tmp, final)
        _write_pointer(index_dir, version_name)
        _prune(index_dir, version_name)
        return BuildResult(version_name, final, engine, n, report, time.time() - t0, extra)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _query_frequencies(path: str | Path) -> dict[str, int]:
    """Normalized query → number of requests, from a search log (impressions or sessions JSONL)."""
    from query_understanding.normalize import normalize

    seen: set[str] = set()
    freq: Counter[str] = Counter()
    for r in iter_jsonl(path):
        for q in ([r] if "query" in r else r.get("queries", [])):
            rid = q.get("request_id")
            if rid is not None:  # impressions repeat a request once per shown result
                if rid in seen:
                    continue
                seen.add(rid)
            n = normalize(q.get("query", ""))
            if n:
                freq[n] += 1
    return dict(freq)


def _write_pointer(index_dir: Path, version_name: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=index_dir, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(version_name + "\n")
    os.replace(tmp, index_dir / CURRENT)


def _prune(index_dir: Path, keep: str) -> None:
    """Keep the current and the previous version (rollback), drop older and abandoned ones."""
    vdir = index_dir / VERSIONS
    versions = sorted((p for p in vdir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
    for p in versions[:-KEEP_VERSIONS]:
        if p.name != keep:
            shutil.rmtree(p, ignore_errors=True)
    for p in vdir.iterdir():
        if p.name.startswith(".") and time.time() - p.stat().st_mtime > 24 * 3600:
            shutil.rmtree(p, ignore_errors=True)
