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


# --- NER ---------------------------------------------------------------------------------

def ner_gold_from_intents(records: Iterable[dict[str, Any]]) -> list["LabelledText"]:
    """Gold spans for generated queries whose makers recorded what they named: {"query",
    "kind", "artist"?, "song"?, "version"?, "show"?, "line"?, "mood_words"?, "surface_terms"?}
    (the shape the log simulator records for every query it types). An alias query names
    its artist by the alias the user typed."""
    from .ner.training_data import LabelledText, label_with

    out = []
    for r in records:
        text = normalize(r.get("query", ""))
        if not text:
            continue
        names: list[tuple[str, str]] = []
        if r.get("kind") == "alias":
            names += [(normalize(t), "artist") for t in r.get("surface_terms", [])]
        elif r.get("kind") == "uploader":
            continue  # uploader names are not an entity type of ours
        for key, typ in (("artist", "artist"), ("song", "song"), ("version", "version"), ("show", "show"), ("line", "lyric")):
            if r.get(key) and (key != "song" or r.get("kind") != "lyric"):
                names.append((normalize(r[key]), typ))
        names += [(normalize(m), "mood") for m in r.get("mood_words", [])]
        spans = label_with(text, [n for n in names if n[0]])
        out.append(LabelledText(text, spans, r.get("kind", "")))
    return out


def evaluate_ner(recognize, gold: Iterable["LabelledText"], types: Iterable[str] | None = None) -> dict[str, Any]:
    """Entity-level F1 (exact span and type, CoNLL style, by seqeval over character BIO tags);
    `recognize(text) -> [RecognizedEntity]`. `types`: only these entity types count (data
    sets label different type sets: CAIS has no show or version)."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    from .ner.training_data import LabelledText

    keep = set(types) if types else None
    y_true, y_pred = [], []
    for g in gold:
        pred = LabelledText(g.text, [(e.start, e.end, e.type) for e in recognize(g.text)
                                     if keep is None or e.type in keep])
        true = LabelledText(g.text, [s for s in g.spans if keep is None or s[2] in keep])
        y_true.append(true.bio())
        y_pred.append(pred.bio())
    rep = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    by_type = {k: {"precision": round(v["precision"], 4), "recall": round(v["recall"], 4), "f1": round(v["f1-score"], 4),
                   "support": int(v["support"])} for k, v in rep.items() if "avg" not in k}
    return {"sentences": len(y_true), "precision": round(precision_score(y_true, y_pred), 4),
            "recall": round(recall_score(y_true, y_pred), 4), "f1": round(f1_score(y_true, y_pred), 4), "by_type": by_type}
