"""Text relevance (article §2.2 文本相关性): word-level match between query and video.

Features per candidate, all in [0, 1]:
- `bm25`: the engine's text score (BM25 with field boosts), normalized by the best
  candidate of the query, so it is comparable across queries;
- `coverage`: share of query-term weight found anywhere in the video's fields;
- `title_coverage`: the same, in the title only;
- `entity_match`: exact entity match per NER aspect — each query entity is compared with the
  video's field of the same type (artist → the video's artists, song → its songs; types
  without a catalog field, e.g. show/version, → title and tags): 1 for a whole-name match in
  that field, 0.5 when the name only occurs elsewhere in the video (a cover's title naming
  the original artist), 0 otherwise; averaged over the query's entities;
- `entity_conflict`: share of query entities whose typed field is filled with OTHER names
  (`周杰伦 晴天` vs a video whose artist is someone else): the intent-mismatch signal of
  grade 2; not used by `combine`, the ensemble learns its weight;
- `closeness` (紧密度): matched terms / length of the shortest title window containing them
  in order of appearance — adjacent terms score 1, scattered ones less;
- `field_coverage`: share of fields with at least one query term.
Aliases from the rewrite route count as term matches (hebe = 田馥甄, SPEC grades).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TEXT_FIELDS = ("title", "artists", "songs", "tags", "uploader", "description")


@dataclass
class TextRelevanceWeights:
    bm25: float = 0.15
    coverage: float = 0.30
    title_coverage: float = 0.15
    entity_match: float = 0.20
    closeness: float = 0.15
    field_coverage: float = 0.05
    grade_cuts: tuple[float, float, float] = (0.25, 0.5, 0.75)  # ≥cut → grade 1, 2, 3

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TextRelevanceWeights":
        base = cls()
        kw = {k: float(d.get(k, getattr(base, k))) for k in ("bm25", "coverage", "title_coverage", "entity_match", "closeness", "field_coverage")}
        cuts = tuple(float(x) for x in d.get("grade_cuts", base.grade_cuts))
        return cls(**kw, grade_cuts=cuts)  # type: ignore[arg-type]


def closeness(query_terms: list[str], title_tokens: list[str]) -> float:
    """Shortest window of title tokens containing every matched query term (each once)."""
    title_set = set(title_tokens)
    wanted = {t for t in query_terms if t in title_set}
    if not wanted:
        return 0.0
    if len(wanted) == 1:
        return 1.0
    best = None
    counts: dict[str, int] = {}
    have = 0
    left = 0
    for right, tok in enumerate(title_tokens):
        if tok in wanted:
            counts[tok] = counts.get(tok, 0) + 1
            if counts[tok] == 1:
                have += 1
        while have == len(wanted):
            span = right - left + 1
            best = span if best is None else min(best, span)
            lt = title_tokens[left]
            if lt in wanted:
                counts[lt] -= 1
                if counts[lt] == 0:
                    have -= 1
            left += 1
    return len(wanted) / best if best else 0.0


def _field_sets(fields: dict[str, Any]) -> tuple[dict[str, set[str]], set[str], set[str]]:
    """Token sets per field, memoized inside the (shared, read-only) stored record: a popular
    video is scored for many queries."""
    cached = fields.get("_sets")
    if cached is None:
        field_sets = {f: set(fields.get(f, [])) for f in TEXT_FIELDS}
        names = set(fields.get("artist_kw", [])) | set(fields.get("song_kw", []))
        cached = (field_sets, names, set().union(*field_sets.values()) | names)
        fields["_sets"] = cached
    return cached


# NER aspect → the video field holding names of that type (whole normalized names).
ASPECT_FIELDS = {"artist": "artist_kw", "song": "song_kw"}


def query_entities(q: Any) -> dict[str, set[str]]:
    """NER aspects of an UnderstoodQuery: entity type → entity texts."""
    out: dict[str, set[str]] = {}
    for e in getattr(q, "entities", []):
        out.setdefault(e.type or "other", set()).add(e.text)
    return out


def entity_scores(entities: dict[str, set[str]] | set[str], fields: dict[str, Any]) -> tuple[float, float]:
    """(entity_match, entity_conflict) per NER aspect; a plain set = entities of unknown type
    (rewrites), matched against any name field."""
    field_sets, names, all_tokens = _field_sets(fields)
    if isinstance(entities, set):
        entities = {"any": entities} if entities else {}
    n = match = conflict = 0.0
    for etype, texts in entities.items():
        kw = ASPECT_FIELDS.get(etype)
        if etype == "any":
            typed = names
        elif kw is not None:
            typed = set(fields.get(kw, []))
        else:  # show, version, album…: no typed catalog field, the title and tags carry them
            typed = field_sets["title"] | field_sets["tags"]
        for t in texts:
            n += 1
            if t in typed:
                match += 1.0
            else:
                if t in all_tokens:
                    match += 0.5
                if kw is not None and typed:
                    conflict += 1.0
    return (match / n, conflict / n) if n else (0.0, 0.0)


def text_features(terms: list[str], weights: list[float], entity_terms: dict[str, set[str]] | set[str], fields: dict[str, Any],
                  bm25_norm: float) -> dict[str, float]:
    if not terms:
        return {"bm25": 0.0, "coverage": 0.0, "title_coverage": 0.0, "entity_match": 0.0, "entity_conflict": 0.0,
                "closeness": 0.0, "field_coverage": 0.0}
    field_sets, names, all_tokens = _field_sets(fields)
    total_w = sum(weights) or 1.0
    cov = sum(w for t, w in zip(terms, weights) if t in all_tokens) / total_w
    tcov = sum(w for t, w in zip(terms, weights) if t in field_sets["title"]) / total_w
    ent, conflict = entity_scores(entity_terms, fields)
    term_set = set(terms)
    fcov = sum(1 for f in TEXT_FIELDS if field_sets[f] & term_set) / len(TEXT_FIELDS)
    return {"bm25": bm25_norm, "coverage": cov, "title_coverage": tcov, "entity_match": ent, "entity_conflict": conflict,
            "closeness": closeness(terms, fields.get("title", [])), "field_coverage": fcov}


def combine(feats: dict[str, float], w: TextRelevanceWeights, has_entities: bool) -> tuple[float, int]:
    # Queries without recognized entities cannot earn entity_match; spread its weight so
    # their scores stay on the same scale as entity queries.
    ew = w.entity_match if has_entities else 0.0
    extra = 0.0 if has_entities else w.entity_match
    parts = {"bm25": w.bm25, "coverage": w.coverage + extra * 0.6, "title_coverage": w.title_coverage + extra * 0.2,
             "entity_match": ew, "closeness": w.closeness + extra * 0.2, "field_coverage": w.field_coverage}
    score = sum(feats[k] * parts[k] for k in parts) / (sum(parts.values()) or 1.0)
    grade = sum(1 for cut in w.grade_cuts if score >= cut)
    return score, grade
