"""`mvsearch eval relevance`: offline AUC of relevance scorers on a labelled set.

Input: any labelled set in the SPEC's format (`{"qid", "query", "video_id", "grade"}`, optional
`"intent"`), including the annotation tool's exports (extra fields are ignored). Every pair is
scored by every scorer (`relevance/scorers.py`); per scorer the report gives
- AUC as in the article: grades 3 and 2 positive, 0 negative, 1 left out (scikit-learn's
  `roc_auc_score`), overall, per intent type and per query-frequency band (head/torso/tail);
- pairwise ordering accuracy over all 4 grades: among pairs of the SAME query with different
  grades, the share the scorer orders correctly (ties count one half);
and writes `report.md`, `report.json` and `roc.png`.

Frequency bands: from a search log when given (queries sorted by requests; head = the queries
that make the first 50% of traffic, torso = up to 80%, tail = the rest and unseen queries),
otherwise from the labelled set's own pair counts per query (a weak proxy; the report says which).

Held-out evaluation: `split_of(qid, seed)` assigns every qid to `fit` or `heldout` by a hash,
so the ensemble and the click-graph iteration are fitted on `fit` queries of any labelled set
and reported on the others (`--split heldout`).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from .scorers import ScorerContext, ScorerUnavailable, build_scorer

SPLIT_SEED = 7
HELDOUT_SHARE = 0.5


# --------------------------------------------------------------------------- labels


@dataclass
class LabelledPair:
    qid: str
    query: str
    video_id: str
    grade: int
    intent: str = ""


def load_labels(path: str | Path) -> list[LabelledPair]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"labels file {p} does not exist")
    out: list[LabelledPair] = []
    with open(p, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}: line {no}: invalid JSON ({e.msg})") from e
            missing = [k for k in ("qid", "query", "video_id", "grade") if k not in r]
            if missing:
                raise ValueError(f"{p}: line {no}: missing {', '.join(missing)} (need qid, query, video_id, grade)")
            g = int(r["grade"])
            if g not in (0, 1, 2, 3):
                raise ValueError(f"{p}: line {no}: grade {g} is not on the 0-3 scale")
            out.append(LabelledPair(str(r["qid"]), str(r["query"]), str(r["video_id"]), g, str(r.get("intent") or "")))
    if not out:
        raise ValueError(f"{p}: no labelled pairs")
    return out


def split_of(qid: str, seed: int = SPLIT_SEED, heldout_share: float = HELDOUT_SHARE) -> str:
    """`fit` or `heldout`, fixed per (qid, seed): a hash, so every file with the same qids splits the same."""
    h = int(hashlib.sha1(f"{seed}:{qid}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "heldout" if h < heldout_share else "fit"


def select_split(pairs: list[LabelledPair], split: str, seed: int = SPLIT_SEED) -> list[LabelledPair]:
    if split == "all":
        return pairs
    if split not in ("fit", "heldout"):
        raise ValueError("split must be all, fit or heldout")
    return [p for p in pairs if split_of(p.qid, seed) == split]


# --------------------------------------------------------------------------- metrics


def article_auc(grades: np.ndarray, scores: np.ndarray) -> float | None:
    """AUC with grades 3,2 positive, 0 negative, 1 left out; None if a class is missing."""
    mask = grades != 1
    y = (grades[mask] >= 2).astype(int)
    if len(set(y.tolist())) < 2:
        return None
    return float(roc_auc_score(y, scores[mask]))


def pairwise_accuracy(qids: list[str], grades: np.ndarray, scores: np.ndarray) -> tuple[float | None, int]:
    """Share of same-query pairs with different grades ordered as the grades (ties: 1/2)."""
    by_q: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(qids):
        by_q[q].append(i)
    correct = 0.0
    total = 0
    for idx in by_q.values():
        g = grades[idx]
        s = scores[idx]
        dg = g[:, None] - g[None, :]
        ds = s[:, None] - s[None, :]
        upper = dg > 0
        total += int(upper.sum())
        correct += float((ds[upper] > 0).sum()) + 0.5 * float((ds[upper] == 0).sum())
    return (correct / total if total else None), total


def frequency_bands(qids: list[str], queries: list[str], logs: str | Path | None) -> tuple[dict[str, str], str]:
    """qid → head/torso/tail, and a note on where frequencies came from."""
    from query_understanding.normalize import normalize

    if logs:
        freq: Counter[str] = Counter()
        with open(logs, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                if int(r.get("position", 1)) == 1:  # one count per results page
                    freq[normalize(r["query"])] += 1
        source = f"search log {logs} (requests per query)"
        key = {qid: normalize(q) for qid, q in zip(qids, queries)}
    else:
        freq = Counter(qids)
        source = "the labelled set's own pair counts per query (no --logs given; a weak proxy)"
        key = {qid: qid for qid in qids}
    total = sum(freq.values()) or 1
    band_of: dict[str, str] = {}
    acc = 0
    for q, n in freq.most_common():
        band_of[q] = "head" if acc < 0.5 * total else ("torso" if acc < 0.8 * total else "tail")
        acc += n
    return {qid: band_of.get(k, "tail") for qid, k in key.items()}, source


# --------------------------------------------------------------------------- evaluation


@dataclass
class ScorerResult:
    name: str
    available: bool
    reason: str = ""
    auc: float | None = None
    pairwise: float | None = None
    by_intent: dict[str, float | None] = field(default_factory=dict)
    by_band: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0
    scores: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        r = lambda x: None if x is None else round(x, 4)  # noqa: E731
        return {"scorer": self.name, "available": self.available, "reason": self.reason, "auc": r(self.auc),
                "pairwise_accuracy": r(self.pairwise), "auc_by_intent": {k: r(v) for k, v in self.by_intent.items()},
                "auc_by_band": {k: r(v) for k, v in self.by_band.items()}, "seconds": round(self.seconds, 2)}


@dataclass
class RelevanceReport:
    labels: str
    split: str
    pairs: int
    queries: int
    grades: dict[int, int]
    band_source: str
    results: list[ScorerResult]
    missing_docs: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"labels": self.labels, "split": self.split, "pairs": self.pairs, "queries": self.queries,
                "grades": {str(k): v for k, v in sorted(self.grades.items())}, "frequency_bands_from": self.band_source,
                "pairs_without_doc": self.missing_docs, "scorers": [r.to_json() for r in self.results]}

    def table_rows(self) -> list[list[str]]:
        intents = sorted({k for r in self.results for k in r.by_intent})
        rows = [["scorer", "AUC", "pairwise acc", "head", "torso", "tail"] + intents]
        f = lambda x: "–" if x is None else f"{x:.4f}"  # noqa: E731
        for r in self.results:
            if not r.available:
                rows.append([r.name, "not available"] + [""] * (len(rows[0]) - 2))
                continue
            rows.append([r.name, f(r.auc), f(r.pairwise)] + [f(r.by_band.get(b)) for b in ("head", "torso", "tail")]
                        + [f(r.by_intent.get(i)) for i in intents])
        return rows

    def markdown(self, command: str = "") -> str:
        rows = self.table_rows()
        lines = [f"# Relevance evaluation", "",
                 f"Labels: `{self.labels}` (split: {self.split}) — {self.pairs} pairs, {self.queries} queries, grades "
                 + ", ".join(f"{k}: {v}" for k, v in sorted(self.grades.items())), "",
                 "AUC: grades 3,2 positive vs 0 (1 left out), scikit-learn `roc_auc_score`. Pairwise accuracy: same-query "
                 "pairs with different grades (all 4 grades) ordered correctly, ties count 1/2.",
                 f"Frequency bands from {self.band_source}.", ""]
        if command:
            lines += [f"Command: `{command}`", ""]
        lines.append("| " + " | ".join(rows[0]) + " |")
        lines.append("|" + "---|" * len(rows[0]))
        for r in rows[1:]:
            lines.append("| " + " | ".join(r) + " |")
        na = [r for r in self.results if not r.available]
        if na:
            lines += ["", "Not available:"] + [f"- `{r.name}`: {r.reason}" for r in na]
        if self.missing_docs:
            lines += ["", f"{self.missing_docs} labelled pairs name videos missing from the index; they were left out."]
        return "\n".join(lines) + "\n"


def evaluate_relevance(pairs: list[LabelledPair], scorer_names: list[str], ctx: ScorerContext, labels_name: str = "",
                       split: str = "all", logs: str | Path | None = None, progress: bool = True) -> RelevanceReport:
    if ctx.understand is None or ctx.get_docs is None:
        raise ValueError("evaluation needs query understanding and a doc store (give the engine/index options)")
    kept, queries, doc_list = ctx.pair_inputs(pairs)
    missing = len(pairs) - len(kept)
    if not kept:
        raise ValueError("none of the labelled videos is in the index")
    grades = np.array([p.grade for p in kept])
    qids = [p.qid for p in kept]
    bands, band_source = frequency_bands(qids, [p.query for p in kept], logs)
    results: list[ScorerResult] = []
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("scoring", total=len(scorer_names))
        for name in scorer_names:
            t0 = time.perf_counter()
            try:
                scorer = build_scorer(name, ctx)
                scores = np.asarray(scorer.score_pairs(queries, doc_list), dtype=np.float64)
            except (ScorerUnavailable, FileNotFoundError) as e:
                results.append(ScorerResult(name, False, str(e)))
                bar.advance(task)
                continue
            if scores.shape != (len(kept),):
                raise ValueError(f"scorer {name} returned {scores.shape} scores for {len(kept)} pairs")
            res = ScorerResult(name, True, auc=article_auc(grades, scores), scores=scores)
            res.pairwise, _ = pairwise_accuracy(qids, grades, scores)
            for intent in sorted({p.intent for p in kept if p.intent}):
                m = np.array([p.intent == intent for p in kept])
                res.by_intent[intent] = article_auc(grades[m], scores[m])
            for band in ("head", "torso", "tail"):
                m = np.array([bands[q] == band for q in qids])
                res.by_band[band] = article_auc(grades[m], scores[m]) if m.any() else None
            res.seconds = time.perf_counter() - t0
            results.append(res)
            bar.advance(task)
    rep = RelevanceReport(labels_name, split, len(kept), len(set(qids)), dict(Counter(grades.tolist())), band_source, results, missing)
    rep._grades_arr = grades  # type: ignore[attr-defined]  # for the ROC plot
    return rep


def _write_atomic(path: Path, data: bytes) -> None:
    from search.atomic import write_bytes_atomic

    write_bytes_atomic(path, data)


def write_report(rep: RelevanceReport, out_dir: str | Path, command: str = "") -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "report.md", "json": out / "report.json", "png": out / "roc.png"}
    _write_atomic(paths["md"], rep.markdown(command).encode("utf-8"))
    j = rep.to_json()
    j["command"] = command
    _write_atomic(paths["json"], json.dumps(j, ensure_ascii=False, indent=1).encode("utf-8"))
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grades = getattr(rep, "_grades_arr")
    mask = grades != 1
    y = (grades[mask] >= 2).astype(int)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for r in rep.results:
        if r.available and r.scores is not None and r.auc is not None:
            fpr, tpr, _ = roc_curve(y, r.scores[mask])
            ax.plot(fpr, tpr, label=f"{r.name} (AUC {r.auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate (grade 0)")
    ax.set_ylabel("true positive rate (grades 3, 2)")
    ax.set_title(f"Relevance ROC ({rep.split}, {rep.pairs} pairs)")
    ax.legend(loc="lower right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    _write_atomic(paths["png"], buf.getvalue())
    return paths


# --------------------------------------------------------------------------- context from the engine options


def context_from_config(config: dict[str, Any], params: dict[str, dict[str, Any]] | None = None) -> ScorerContext:
    """Scorer context from an engine config: the index bundle's doc store and dictionary, and
    the configured query-understanding stage (no engine is opened)."""
    from search.documents import DocStore
    from search.indexer import current_bundle, read_manifest
    from search.pipeline import STAGES, PipelineContext

    bundle = current_bundle(config["engine"]["index_dir"])
    manifest = read_manifest(bundle)
    uc = config.get("understanding", {})
    qu = STAGES["understanding"][uc.get("impl", "baseline")](uc.get("params", {}), PipelineContext(bundle, manifest, config))
    from query_understanding import QueryInput

    store = DocStore(bundle / "docstore.sqlite")
    return ScorerContext(bundle_dir=bundle, config=config, params=params or {},
                         understand=lambda text: qu.run(QueryInput(text)), get_docs=store.get_many)
