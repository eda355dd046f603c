"""Export a batch as a labelled set in the SPEC's `qrels.jsonl` format.

One line per (query, video): `{"qid", "query", "video_id", "grade"}` — what
`mvsearch eval search --queries --qrels` and `search.evaluation.load_judgements` read —
plus fields for analysis and fine-tuning:

- `annotators`: how many annotators graded the pair;
- `method`: `majority` (majority vote; a tie is broken by the lower median and flagged
  `"tie": true`), `adjudicated` (a lead's grade from the adjudication view, which always
  wins), or `gold` (a gold pair's known grade, with `--include-gold`);
- `votes`: grade → count; `agreement`: the share of annotators who gave the exported grade;
- `aspects`: per sub-dimension (term_match, semantic, intent), the share of annotators who
  ticked it, over those who answered;
- `batch`, `stratum`.

Methods: `majority` exports every pair with at least `min_annotators` grades.
`adjudicated` is strict: a pair on which annotators disagree is exported only once it has
been adjudicated; unanimous pairs are exported as they are.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .grades import ASPECT_KEYS
from .quality import majority

METHODS = ("majority", "adjudicated")


@dataclass
class ExportReport:
    batch: str
    method: str
    exported: int = 0
    unlabelled: int = 0
    too_few: int = 0
    unadjudicated: int = 0
    ties: int = 0
    adjudicated: int = 0
    gold: int = 0
    queries: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = (f"batch {self.batch} ({self.method}): {self.exported} pairs over {self.queries} queries exported"
             f" ({self.adjudicated} adjudicated, {self.ties} ties broken by the lower median, {self.gold} gold)")
        left = [f"{n} {what}" for n, what in ((self.unlabelled, "without grades"), (self.too_few, "with too few grades"),
                                               (self.unadjudicated, "disagreeing and not adjudicated")) if n]
        return s + ("; left out: " + ", ".join(left) if left else "")


def build_qrels(store: Any, batch_id: int, method: str = "majority", include_gold: bool = False,
                min_annotators: int = 1) -> tuple[list[dict[str, Any]], ExportReport]:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}")
    batch = store.get_batch(batch_id)
    if batch is None:
        raise ValueError(f"no batch {batch_id}")
    pairs = store.pairs_for_batch(batch_id)
    labels = store.labels_for_batch(batch_id)
    adj = store.adjudications_for_batch(batch_id)
    votes: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in labels:
        votes[r["pair_id"]].append(r)
    rep = ExportReport(batch.name, method)
    rows: list[dict[str, Any]] = []
    for p in pairs:
        vs = votes.get(p["id"], [])
        grades = [int(v["grade"]) for v in vs]
        base = {"qid": p["qid"], "query": p["query"], "video_id": p["video_id"]}
        if p["is_gold"]:
            if include_gold:
                rows.append({**base, "grade": int(p["gold_grade"]), "annotators": len(vs), "method": "gold",
                             "votes": _votes(grades), "batch": batch.name, "stratum": p["stratum"]})
                rep.gold += 1
            continue
        a = adj.get(p["id"])
        if a is not None:
            grade, how, tie = int(a["grade"]), "adjudicated", False
            rep.adjudicated += 1
        else:
            if not vs:
                rep.unlabelled += 1
                continue
            if len(vs) < min_annotators:
                rep.too_few += 1
                continue
            if method == "adjudicated" and len(set(grades)) > 1:
                rep.unadjudicated += 1
                continue
            grade, tie = majority(grades)
            how = "majority"
            rep.ties += int(tie)
        row = {**base, "grade": grade, "annotators": len(vs), "method": how, "votes": _votes(grades),
               "agreement": round(grades.count(grade) / len(grades), 4) if grades else None,
               "aspects": _aspects(vs), "batch": batch.name, "stratum": p["stratum"]}
        if tie:
            row["tie"] = True
        rows.append(row)
    rep.exported = len(rows)
    rep.queries = len({r["qid"] for r in rows})
    return rows, rep


def _votes(grades: list[int]) -> dict[str, int]:
    c = Counter(grades)
    return {str(g): c[g] for g in sorted(c, reverse=True)}


def _aspects(vs: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k in ASPECT_KEYS:
        answered = [int(v[k]) for v in vs if v.get(k) is not None]
        out[k] = round(sum(answered) / len(answered), 4) if answered else None
    return out


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def queries_of(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The queries file for `mvsearch eval search --queries`: one `{"qid", "query"}` a qid."""
    seen: dict[str, str] = {}
    for r in rows:
        seen.setdefault(r["qid"], r["query"])
    return [{"qid": q, "query": t} for q, t in seen.items()]


def write_atomic(path: str | Path, text: str) -> Path:
    """Write to a temporary file beside the target, then rename (never a half-written file)."""
    from ..atomic import write_text_atomic

    return write_text_atomic(path, text)
