"""Offline evaluation of query understanding (`mvsearch eval qu`).

Spelling correction on labelled pairs {"typed", "clean"[, "noise"]} (the log simulator
writes them for its noisy queries; any hand-labelled set in that shape works):
- precision: of the queries we corrected, the share corrected to exactly the clean query;
- recall: of the noisy queries, the share whose understood text is exactly the clean query
  (traditional characters, width and spacing are fixed by normalization, typos by correction);
- rewrite recall: the share where the clean query is the correction or one of the rewrites;
- false corrections: on clean queries (no noise), the share we changed anyway.
Per noise kind, because pinyin, homophone and keyboard typos behave differently.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from .normalize import normalize


@dataclass
class CorrectionReport:
    pairs: int
    corrected: int
    precision: float
    recall: float
    rewrite_recall: float
    clean_queries: int
    false_correction_rate: float
    by_noise: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def evaluate_correction(understand, pairs: Iterable[dict[str, Any]], clean_queries: Iterable[str] = ()) -> CorrectionReport:
    """`understand(text) -> UnderstoodQuery` (the pipeline's understanding stage)."""
    n = corrected = right = rw_right = right_applied = 0
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # n, right, rewrite-right
    for p in pairs:
        q = understand(p["typed"])
        want = normalize(p["clean"])
        applied = any(c.applied for c in q.corrections)
        n += 1
        corrected += int(applied)
        # Fixed, whether by normalization or by correction (spacing between words aside).
        ok = q.normalized.replace(" ", "") == want.replace(" ", "")
        right += int(ok)
        right_applied += int(ok and applied)
        rw_ok = ok or want.replace(" ", "") in {normalize(r).replace(" ", "") for r in q.rewrites}
        rw_right += int(rw_ok)
        k = kinds[p.get("noise", "?")]
        k[0] += 1
        k[1] += int(ok)
        k[2] += int(rw_ok)
    m = changed = 0
    for text in clean_queries:
        q = understand(text)
        m += 1
        changed += int(any(c.applied for c in q.corrections))
    return CorrectionReport(
        pairs=n, corrected=corrected, precision=right_applied / corrected if corrected else 0.0, recall=right / n if n else 0.0,
        rewrite_recall=rw_right / n if n else 0.0, clean_queries=m, false_correction_rate=changed / m if m else 0.0,
        by_noise={k: {"pairs": v[0], "recall": round(v[1] / v[0], 4), "rewrite_recall": round(v[2] / v[0], 4)}
                  for k, v in sorted(kinds.items())})
