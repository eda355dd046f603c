"""`mvsearch eval search`: the whole pipeline on judged queries.

Metrics: NDCG@10 and NDCG@20 (linear gains = grades, via scikit-learn's `ndcg_score`),
Recall@100 (judged grade ≥ 2 retrieved in the top 100), MRR (first grade ≥ 2), diversity of
the top 10 (distinct songs, distinct uploaders, intra-list similarity ILS = mean pairwise
cosine of the videos' LSA vectors; song/uploader keys as in ranking/rerank.py), and the
relevance AUC of the final scores as in the article (grades 3, 2 positive; 0 negative;
1 left out; judged videos the pipeline did not return get the lowest score).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import ndcg_score, roc_auc_score

from .pipeline import SearchPipeline, SearchRequest

RELEVANT = 2


@dataclass
class SearchEvalReport:
    queries: int
    ndcg10: float
    ndcg20: float
    recall100: float
    mrr: float
    auc: float | None
    judged_pairs: int
    per_query: list[dict[str, Any]] = field(default_factory=list)
    diversity: dict[str, float] = field(default_factory=dict)  # mean over queries of the top-10 diversity metrics

    def summary(self) -> dict[str, Any]:
        return {"queries": self.queries, "NDCG@10": round(self.ndcg10, 4), "NDCG@20": round(self.ndcg20, 4),
                "Recall@100": round(self.recall100, 4), "MRR": round(self.mrr, 4),
                "AUC(3,2 vs 0)": None if self.auc is None else round(self.auc, 4), "judged_pairs": self.judged_pairs,
                **{k: round(v, 4) for k, v in self.diversity.items()}}


def bundle_lsa_embedder(pipeline: Any) -> Any:
    """The index bundle's LSA embedder (always built), for intra-list similarity: the same
    vectors whichever query embedder recall uses, so ILS compares across configurations."""
    from .embedder import LsaEmbedder

    p = Path(getattr(pipeline, "bundle", "") or "") / "embedder.npz"
    return LsaEmbedder.load(p) if p.is_file() else None


def diversity_at(hits: list[Any], embedder: Any, k: int = 10) -> dict[str, float | None]:
    """Distinct songs and uploaders among the top k, and their intra-list similarity
    (mean pairwise cosine of the LSA vectors; lower = more varied; None without 2 hits)."""
    from ranking.rerank import doc_vectors, mean_pairwise_cosine, song_key, uploader_key

    top = hits[:k]
    out: dict[str, float | None] = {
        "distinct_songs@10": float(len({song_key(c.doc) or c.video_id for c in top})),
        "distinct_uploaders@10": float(len({uploader_key(c.doc) or c.video_id for c in top})),
        "ILS@10": None}
    if embedder is not None and len(top) >= 2:
        out["ILS@10"] = mean_pairwise_cosine(doc_vectors(embedder, [c.doc for c in top]))
    return out


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {no}: invalid JSON ({e.msg})") from e
    return out


def load_judgements(queries_path: str | Path, qrels_path: str | Path) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    queries = {str(r["qid"]): r["query"] for r in read_jsonl(queries_path)}
    qrels: dict[str, dict[str, int]] = {}
    for r in read_jsonl(qrels_path):
        qid = str(r["qid"])
        if qid not in queries and r.get("query"):
            queries[qid] = r["query"]
        qrels.setdefault(qid, {})[str(r["video_id"])] = int(r["grade"])
    return queries, qrels


def _ndcg(ranked: list[str], scores: list[float], judged: dict[str, int], k: int) -> float:
    """NDCG@k of a run with scikit-learn: judged videos the run did not return are placed
    after k zero-gain fillers, so they count in the ideal DCG but never in the run's DCG."""
    ranked = ranked[:k]
    missing = [v for v in judged if v not in set(ranked)]
    gains = [judged.get(v, 0) for v in ranked] + [0] * (k - len(ranked)) + [judged[v] for v in missing]
    if not any(g > 0 for g in gains):
        return 0.0
    if len(gains) == 1:
        return 1.0
    y_true = np.array([gains], dtype=float)
    y_score = np.array([[-float(i) for i in range(len(gains))]])  # rank order, no ties
    return float(ndcg_score(y_true, y_score, k=k))


def evaluate_search(pipeline: SearchPipeline, queries: dict[str, str], qrels: dict[str, dict[str, int]], depth: int = 100,
                    run_path: str | Path | None = None, run_name: str = "mvsearch", progress: bool = True) -> SearchEvalReport:
    from rich.progress import Progress

    per_query, labels, scores = [], [], []
    run_lines: list[str] = []
    lsa = bundle_lsa_embedder(pipeline)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("evaluating", total=len(qrels))
        for qid, judged in qrels.items():
            text = queries.get(qid)
            if text is None:
                raise ValueError(f"qid {qid!r} has judgements but no query text in the queries file")
            res = pipeline.search(SearchRequest(text, page=1, size=depth))
            ranked = [c.video_id for c in res.hits]
            final = [float(c.rank_score) for c in res.hits]
            for rank, (vid, s) in enumerate(zip(ranked, final), 1):
                run_lines.append(f"{qid} Q0 {vid} {rank} {s:.6f} {run_name}")
            rel = {v for v, g in judged.items() if g >= RELEVANT}
            rr = next((1.0 / i for i, v in enumerate(ranked, 1) if v in rel), 0.0)
            rec = len(rel & set(ranked[:100])) / len(rel) if rel else None
            n10, n20 = _ndcg(ranked, final, judged, 10), _ndcg(ranked, final, judged, 20)
            pos = {v: s for v, s in zip(ranked, final)}
            floor = (min(final) if final else 0.0) - 1.0
            for v, g in judged.items():
                if g == 1:
                    continue
                labels.append(1 if g >= 2 else 0)
                scores.append(pos.get(v, floor))
            per_query.append({"qid": qid, "query": text, "ndcg@10": n10, "ndcg@20": n20, "recall@100": rec, "rr": rr,
                              "returned": len(ranked), **diversity_at(res.hits, lsa)})
            bar.advance(task)
    if run_path:
        p = Path(run_path)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text("\n".join(run_lines) + "\n", encoding="utf-8")
        tmp.replace(p)
    recalls = [q["recall@100"] for q in per_query if q["recall@100"] is not None]
    auc = float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else None
    n = len(per_query) or 1
    diversity = {}
    for key in ("distinct_songs@10", "distinct_uploaders@10", "ILS@10"):
        vals = [q[key] for q in per_query if q.get(key) is not None]
        if vals:
            diversity[key] = sum(vals) / len(vals)
    return SearchEvalReport(len(per_query), sum(q["ndcg@10"] for q in per_query) / n, sum(q["ndcg@20"] for q in per_query) / n,
                            sum(recalls) / len(recalls) if recalls else 0.0, sum(q["rr"] for q in per_query) / n, auc, len(labels), per_query,
                            diversity)
