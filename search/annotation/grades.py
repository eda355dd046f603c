"""The SPEC's relevance scale (from the article), as shown to annotators beside every task."""
from __future__ import annotations

GRADES: list[dict[str, object]] = [
    {"grade": 3, "name": "good", "short": "good",
     "definition": "Term match, semantically related and intent match. True aliases count as a term match (hebe = 田馥甄).",
     "examples": ["周杰伦 晴天 → 周杰伦《晴天》官方MV", "hebe → 田馥甄《小幸运》MV"]},
    {"grade": 2, "name": "fair-good", "short": "fair-good",
     "definition": "Related, but the terms or the intent do not match.",
     "examples": ["周杰伦 晴天 → someone's cover of 晴天", "hebe → an S.H.E MV"]},
    {"grade": 1, "name": "fair-fair", "short": "fair-fair",
     "definition": "The terms match but the video is unrelated.",
     "examples": ["晴天 → an anime edit titled 朗朗晴天"]},
    {"grade": 0, "name": "bad", "short": "bad",
     "definition": "No term match and unrelated.",
     "examples": ["周杰伦 晴天 → AC/DC live"]},
]
GRADE_NAMES = {int(g["grade"]): str(g["name"]) for g in GRADES}
VALID_GRADES = frozenset(GRADE_NAMES)

# The three sub-dimensions (optional checkboxes on the grading page).
ASPECTS: list[dict[str, str]] = [
    {"key": "term_match", "label": "Term match", "key_hint": "t",
     "help": "the video's text contains the query's terms (or true aliases of them)"},
    {"key": "semantic", "label": "Semantically related", "key_hint": "r",
     "help": "artist↔song, album, show, style, language…"},
    {"key": "intent", "label": "Intent match", "key_hint": "i",
     "help": "the query names a song/artist/album/lyric and the video is that entity"},
]
ASPECT_KEYS = tuple(a["key"] for a in ASPECTS)


def relevant(grade: int) -> bool:
    """The binary view used for agreement: good + fair-good (≥ 2) vs fair-fair + bad."""
    return int(grade) >= 2
