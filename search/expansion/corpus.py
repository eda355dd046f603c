"""Texts the small BERT learns our language from: catalog titles and descriptions, the
knowledge base (names, aliases, songs, shows, lyric lines), real queries, and the QBQTC and
paraphrase-pair texts in ../shared/data. Every reader yields normalized lines; a missing
source is reported (not silently skipped) so a run says what it was trained on."""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from query_understanding.normalize import normalize_doc_text


def default_shared_data() -> Path:
    return Path(os.environ.get("MVSEARCH_SHARED_DATA", "../shared/data"))


@dataclass
class CorpusReport:
    lines_by_source: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def _clean(text: str) -> str:
    t = normalize_doc_text(text or "").strip()
    return t if len(t) >= 2 else ""


def catalog_texts(path: str | Path) -> Iterator[str]:
    from query_understanding.records import iter_jsonl

    for r in iter_jsonl(path):
        yield _clean(r.get("title", ""))
        yield _clean(r.get("description", ""))
        yield _clean(" ".join(list(r.get("artists", [])) + list(r.get("songs", [])) + list(r.get("tags", []))))


def kb_texts() -> Iterator[str]:
    from search.kb import load_kb

    kb = load_kb()
    for a in kb.artists:
        yield _clean(" ".join([a["name"], *kb.aliases_of(a["name"])]))
        if a.get("signature_songs"):
            yield _clean(a["name"] + " " + " ".join(a["signature_songs"][:8]))
    for s in kb.songs:
        yield _clean(" ".join([s["title"], *s.get("artists", [])]))
    for sh in kb.shows:
        yield _clean(" ".join([sh["name"], *sh.get("aliases", [])]))
    for ly in kb.lyrics:
        yield _clean(" ".join(str(v) for v in ly.values() if isinstance(v, str)))


def shared_texts(data: Path, report: CorpusReport) -> Iterator[tuple[str, str]]:
    """(source, text) from ../shared/data: real queries, QBQTC query/title, paraphrase pairs."""
    q = data / "queries"
    files: list[tuple[str, Path, str]] = [
        ("vsq", q / "vsq" / "train.txt", "tsv_last"), ("multicpr_video", q / "multicpr_video" / "train.query.txt", "tsv_last"),
        ("sogouq", q / "sogouq" / "SogouQ.sample.utf8.tsv", "sogou"),
        ("qbqtc", data / "relevance" / "qbqtc" / "dev.json", "qbqtc"),
        ("lcqmc", data / "sentence_pairs" / "LCQMC_dev.txt", "pairs_tsv"),
        ("pawsx", data / "sentence_pairs" / "pawsx_zh_dev.tsv", "pairs_tsv"),
        ("oppo_xiaobu", data / "sentence_pairs" / "oppo_xiaobu_dev.tsv", "pairs_tsv"),
        ("atec", data / "sentence_pairs" / "atec_nlp_sim_train.csv", "pairs_tsv"),
        ("bq", data / "sentence_pairs" / "BQ_corpus_dev.csv", "pairs_csv"),
    ]
    for name, path, kind in files:
        if not path.exists():
            report.missing.append(str(path))
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            if kind == "qbqtc":
                for line in f:
                    try:
                        r = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    yield name, r.get("query", "")
                    yield name, r.get("title", "")
            elif kind == "pairs_csv":
                for row in csv.reader(f):
                    for t in row[:2]:
                        yield name, t
            else:
                for line in f:
                    parts = line.rstrip("\n").split("\t")
                    if kind == "tsv_last":
                        yield name, parts[-1]
                    elif kind == "sogou":
                        if len(parts) >= 3:
                            yield name, parts[2].strip("[]")
                    else:  # pairs: the two sentences (LCQMC: s1 s2 label; ATEC: id s1 s2 label)
                        texts = [p for p in parts if p and not p.strip().isdigit()]
                        for t in texts[:2]:
                            yield name, t


def log_queries(path: str | Path) -> Iterator[str]:
    """Queries from a sessions log (the simulated users' own words)."""
    from query_understanding.records import iter_jsonl

    for r in iter_jsonl(path):
        for q in r.get("queries", []):
            yield _clean(q.get("query", ""))


def pretraining_corpus(catalog: str | Path | None, shared_data: Path | None, sessions: str | Path | None = None,
                       report: CorpusReport | None = None, max_lines: int | None = None) -> list[str]:
    """All pretraining lines, deduplicated in first-seen order (duplicates would weight
    popular queries by how often the simulator repeated them, not by how much they teach)."""
    report = report or CorpusReport()
    seen: dict[str, None] = {}

    def add(source: str, text: str) -> None:
        t = _clean(text) if source not in ("catalog", "kb", "sessions") else text
        if t and t not in seen:
            seen[t] = None
            report.lines_by_source[source] = report.lines_by_source.get(source, 0) + 1

    if catalog:
        if not Path(catalog).exists():
            raise FileNotFoundError(f"catalog not found: {catalog}")
        for t in catalog_texts(catalog):
            add("catalog", t)
    for t in kb_texts():
        add("kb", t)
    if sessions and Path(sessions).exists():
        for t in log_queries(sessions):
            add("sessions", t)
    if shared_data is not None:
        for source, t in shared_texts(Path(shared_data), report):
            add(source, t)
    lines = list(seen)
    return lines[:max_lines] if max_lines else lines
