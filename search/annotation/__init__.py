"""Relevance annotation tool: annotators grade (query, video) pairs on the SPEC's 4-grade
scale; the results become labelled sets (`qrels.jsonl`).

Parts:
- `store.AnnotationStore`   storage layer (SQLite in WAL mode, portable SQL, every write in a
                              transaction, append-only label history, audit log)
- `sampling`                 where pairs come from (search results, logs, uploads) and how a
                              batch samples them (CTR tier, intent type, model disagreement)
- `quality`                  Cohen's / Fleiss' kappa, binary agreement, gold accuracy,
                              disagreements for adjudication
- `export`                   labelled set in the SPEC's qrels format (majority | adjudicated)
- `service.AnnotationService` the operations the web app and the CLI share
- `web.mount_annotation`     the FastAPI router (/annotate: login, grading page, admin)
- `cli`                      `mvsearch annotate …`
"""
from __future__ import annotations

from .grades import GRADES, GRADE_NAMES
from .store import AnnotationError, AnnotationStore, Conflict, Forbidden, Invalid, NotFound

__all__ = ["AnnotationStore", "AnnotationError", "Conflict", "Forbidden", "Invalid", "NotFound", "GRADES", "GRADE_NAMES"]
