"""Click-graph relevance (Jiang et al., SIGIR 2016, "Learning query and document relevance
from a web-scale click graph"), on our search logs.

- Graph: a bipartite graph of (normalized) queries and videos from the TRAIN split of the
  impressions log; an edge for every clicked (query, video) pair, weighted by its smoothed CTR
  ((clicks + a·p) / (impressions + a), p = global CTR), so a video clicked once out of 500
  impressions of a query ties it less than one clicked on every showing.
- Vectors: word bags over one vocabulary. Video vectors start from their title words; then
  alternately query_i = norm(Σ_j C_ij · video_j) and video_j = norm(Σ_i C_ij · query_i)
  (each vector truncated to its top `top_words` = 20 words to stay sparse, as the paper, then
  L2-normalized, after every half step). Each full iteration is scored by AUC (grades 3,2 vs 0)
  on a labelled set and the best iteration is kept — that is the paper's early stopping.
- Unseen queries/videos: n-gram vectors. Every text is broken into components (its words and
  the character bigrams of its words); a component's vector is the weighted mean of the
  learned vectors of the texts that contain it (the least-squares fit of "text vector ≈ mean
  of its component vectors" when components co-occur independently; the paper's n-gram
  method). An unseen text gets the idf-weighted sum of its known components' vectors.
- Scores: cosine of the two L2-normalized vectors, and KL(Q‖I) of the two as word
  distributions, the video side smoothed with the background word distribution (Jelinek-
  Mercer, λ), mapped to a similarity exp(-KL) in (0, 1].

The model is one versioned `.npz` file (FORMAT_VERSION) written atomically.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import scipy.sparse as sp

from query_understanding import UnderstoodQuery
from query_understanding.normalize import normalize

from .scorers import ScorerContext, ScorerUnavailable, register_scorer

FORMAT_VERSION = 1
KIND = "mvsearch.click_graph"


# --------------------------------------------------------------------------- sparse helpers


def l2_normalize_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float64)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv) @ m)


def truncate_rows(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest entries of every row (ties: the first ones by column)."""
    m = sp.csr_matrix(m)
    m.eliminate_zeros()
    if k <= 0:
        return m
    indptr, indices, data = [0], [], []
    for i in range(m.shape[0]):
        s, e = m.indptr[i], m.indptr[i + 1]
        d, c = m.data[s:e], m.indices[s:e]
        if len(d) > k:
            keep = np.argsort(-d, kind="stable")[:k]
            d, c = d[keep], c[keep]
        indices.extend(c.tolist())
        data.extend(d.tolist())
        indptr.append(len(indices))
    return sp.csr_matrix((np.array(data, dtype=np.float64), np.array(indices, dtype=np.int64), np.array(indptr)), shape=m.shape)


def norm_top(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep each row's top k words, then L2-normalize (so cosines stay cosines)."""
    return l2_normalize_rows(truncate_rows(m, k))


def propagate(C: sp.csr_matrix, D0: sp.csr_matrix, iterations: int, top_words: int = 20
              ) -> Iterable[tuple[int, sp.csr_matrix, sp.csr_matrix]]:
    """Alternate propagation on the click graph C (queries × videos): yields
    (iteration, Q, D) for iteration 1..n, Q = norm(C·D_prev), D = norm(Cᵀ·Q)."""
    D = norm_top(D0, top_words)
    Ct = sp.csr_matrix(C.T)
    for it in range(1, iterations + 1):
        Q = norm_top(C @ D, top_words)
        Dn = norm_top(Ct @ Q, top_words)
        # videos without clicks keep their previous vector (their title words)
        has = np.asarray(abs(Ct).sum(axis=1)).ravel() > 0
        D = sp.csr_matrix(sp.diags(has.astype(float)) @ Dn + sp.diags((~has).astype(float)) @ D)
        yield it, Q, D


# --------------------------------------------------------------------------- model


def _replace_rows(m: sp.csr_matrix, rows: list[int], new: sp.csr_matrix) -> sp.csr_matrix:
    """m with rows[k] replaced by new[k]."""
    keep = np.ones(m.shape[0])
    keep[rows] = 0.0
    P = sp.csr_matrix((np.ones(len(rows)), (rows, np.arange(len(rows)))), shape=(m.shape[0], len(rows)))
    return sp.csr_matrix(sp.diags(keep) @ m + P @ new)


def components(tokens: list[str]) -> list[str]:
    """n-gram components of a text: its words and the character bigrams of longer words."""
    out = [f"w:{t}" for t in tokens]
    for t in tokens:
        if len(t) >= 3:
            out.extend(f"c:{t[i:i + 2]}" for i in range(len(t) - 1))
    return out


@dataclass
class ClickGraphModel:
    vocab: list[str]
    query_index: dict[str, int]
    video_index: dict[str, int]
    Q: sp.csr_matrix
    D: sp.csr_matrix
    comp_index: dict[str, int]          # component → row of the n-gram matrices
    comp_idf: np.ndarray
    QN: sp.csr_matrix                   # query-side component vectors
    DN: sp.csr_matrix                   # video-side component vectors
    background: np.ndarray              # word distribution of all video vectors (KL smoothing)
    meta: dict[str, Any] = field(default_factory=dict)
    kl_lambda: float = 0.2
    comp_qdf: np.ndarray | None = None  # training queries containing each component (synonym support)

    # ---- vectors
    def _ngram_matrix(self, texts: list[list[str]], side: sp.csr_matrix) -> sp.csr_matrix:
        """n-gram vectors of many texts at once: idf-weighted sum of known component vectors."""
        rows, cols, vals = [], [], []
        for i, toks in enumerate(texts):
            for c in dict.fromkeys(components(toks)):
                j = self.comp_index.get(c)
                if j is not None:
                    rows.append(i)
                    cols.append(j)
                    vals.append(self.comp_idf[j])
        X = sp.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(self.comp_index)))
        return norm_top(X @ side, int(self.meta.get("top_words", 20)))

    def query_vectors(self, queries: list[UnderstoodQuery | str]) -> sp.csr_matrix:
        keys = [normalize(q) if isinstance(q, str) else q.normalized for q in queries]
        rows = [self.query_index.get(k) for k in keys]
        unseen = [i for i, r in enumerate(rows) if r is None]
        known = sp.csr_matrix(self.Q[[r if r is not None else 0 for r in rows]])
        if not unseen:
            return known
        toks = [keys[i].split() if isinstance(queries[i], str) else queries[i].terms for i in unseen]  # type: ignore[union-attr]
        ng = self._ngram_matrix(toks, self.QN)
        return _replace_rows(known, unseen, ng)

    def video_vectors(self, video_ids: list[str], titles: list[list[str]]) -> sp.csr_matrix:
        """Videos of the graph and of the catalog at training time have a stored vector (item
        vectors are precomputed); only videos indexed after training need their n-gram vector."""
        rows = [self.video_index.get(v) for v in video_ids]
        unseen = [i for i, r in enumerate(rows) if r is None]
        known = sp.csr_matrix(self.D[[r if r is not None else 0 for r in rows]])
        if not unseen:
            return known
        return _replace_rows(known, unseen, self._ngram_matrix([titles[i] for i in unseen], self.DN))

    def add_catalog_videos(self, video_ids: list[str], titles: list[list[str]]) -> int:
        """Precompute n-gram vectors for catalog videos without clicks (no per-request work)."""
        new = [(v, t) for v, t in zip(video_ids, titles) if v not in self.video_index]
        if not new:
            return 0
        M = self._ngram_matrix([t for _, t in new], self.DN)
        base = self.D.shape[0]
        self.D = sp.vstack([self.D, M]).tocsr()
        for k, (v, _) in enumerate(new):
            self.video_index[v] = base + k
        return len(new)

    # ---- scores
    def score(self, qvecs: sp.csr_matrix, dvecs: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Row-aligned (cosine, exp(-KL(Q‖I))) for stacked query and video vectors. KL runs over
        the query's words; the video distribution is smoothed with the background, so it is finite."""
        qvecs, dvecs = sp.csr_matrix(qvecs), sp.csr_matrix(dvecs)
        cos = np.asarray(qvecs.multiply(dvecs).sum(axis=1)).ravel()
        n = qvecs.shape[0]
        lam = self.kl_lambda

        def l1(m: sp.csr_matrix) -> sp.csr_matrix:
            s = np.asarray(abs(m).sum(axis=1)).ravel()
            return sp.csr_matrix(sp.diags(np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)) @ m)

        qp, dp = l1(qvecs), l1(dvecs)
        qp.eliminate_zeros()
        if qp.nnz == 0:
            return cos, np.zeros(n)
        pattern = qp.copy()
        pattern.data = lam * self.background[qp.indices]
        mix = sp.csr_matrix(pattern + (1 - lam) * dp.multiply(qp > 0))
        mix.sort_indices()
        qp.sort_indices()
        terms = qp.data * np.log(qp.data / np.maximum(mix.data, 1e-12))
        kl = np.add.reduceat(terms, qp.indptr[:-1]) if len(terms) else np.zeros(n)
        has = np.diff(qp.indptr) > 0
        kl = np.where(has, kl, np.inf)
        return cos, np.exp(-kl)

    def score_pairs(self, queries: list[UnderstoodQuery], docs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """(cosine, exp(-KL)) per pair; same values as `score`, computed per distinct query on
        the ≤ top_words columns of its vector (dense, small), which is what keeps the pipeline
        stage fast on hundreds of candidates."""
        n = len(docs)
        if not n:
            return np.zeros(0), np.zeros(0)
        groups: dict[int, list[int]] = {}
        qlist: list[UnderstoodQuery] = []
        for i, q in enumerate(queries):
            if id(q) not in groups:
                groups[id(q)] = []
                qlist.append(q)
            groups[id(q)].append(i)
        qv = self.query_vectors(qlist)
        dv = self.video_vectors([d["video_id"] for d in docs], [d.get("_fields", {}).get("title", []) for d in docs])
        dsum = np.asarray(dv.sum(axis=1)).ravel()
        cos, kl_sim = np.zeros(n), np.zeros(n)
        lam = self.kl_lambda
        for k, rows in enumerate(groups.values()):
            s, e = qv.indptr[k], qv.indptr[k + 1]
            idx, val = qv.indices[s:e], qv.data[s:e]
            keep = val > 0
            idx, val = idx[keep], val[keep]
            if len(idx) == 0:
                continue
            r = np.asarray(rows)
            sub = dv[r][:, idx].toarray()                       # (rows × query words)
            cos[r] = sub @ val
            qw = val / val.sum()
            dist = np.divide(sub, dsum[r][:, None], out=np.zeros_like(sub), where=dsum[r][:, None] > 0)
            p_i = (1 - lam) * dist + lam * self.background[idx]
            kl_sim[r] = np.exp(-(qw * np.log(qw / np.maximum(p_i, 1e-12))).sum(axis=1))
        return cos, kl_sim

    # ---- persistence
    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta, kind=KIND, format_version=FORMAT_VERSION, kl_lambda=self.kl_lambda)
        arrays: dict[str, Any] = {"meta": np.array(json.dumps(meta, ensure_ascii=False)),
                                  "vocab": np.array(self.vocab, dtype=object),
                                  "queries": np.array(sorted(self.query_index, key=self.query_index.get), dtype=object),
                                  "videos": np.array(sorted(self.video_index, key=self.video_index.get), dtype=object),
                                  "comps": np.array(sorted(self.comp_index, key=self.comp_index.get), dtype=object),
                                  "comp_idf": self.comp_idf, "background": self.background,
                                  "comp_qdf": self.comp_qdf if self.comp_qdf is not None else np.zeros(len(self.comp_index))}
        for name, m in (("Q", self.Q), ("D", self.D), ("QN", self.QN), ("DN", self.DN)):
            m = sp.csr_matrix(m)
            arrays.update({f"{name}_data": m.data, f"{name}_indices": m.indices, f"{name}_indptr": m.indptr,
                           f"{name}_shape": np.array(m.shape)})
        from search.atomic import atomic_path

        with atomic_path(p, ".npz") as tmp:
            np.savez_compressed(tmp, **arrays)
        return p

    @classmethod
    def load(cls, path: str | Path) -> "ClickGraphModel":
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"click-graph model {p} does not exist; train it with `mvsearch relevance click-graph train`")
        z = np.load(p, allow_pickle=True)
        meta = json.loads(str(z["meta"]))
        if meta.get("kind") != KIND or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{p} is not a click-graph model of format {FORMAT_VERSION} (found {meta.get('kind')} "
                             f"v{meta.get('format_version')}); retrain it")

        def mat(n: str) -> sp.csr_matrix:
            return sp.csr_matrix((z[f"{n}_data"], z[f"{n}_indices"], z[f"{n}_indptr"]), shape=tuple(z[f"{n}_shape"]))

        return cls(list(z["vocab"]), {q: i for i, q in enumerate(z["queries"])}, {v: i for i, v in enumerate(z["videos"])},
                   mat("Q"), mat("D"), {c: i for i, c in enumerate(z["comps"])}, z["comp_idf"], mat("QN"), mat("DN"),
                   z["background"], meta, float(meta.get("kl_lambda", 0.2)), z["comp_qdf"] if "comp_qdf" in z else None)


# --------------------------------------------------------------------------- training


@dataclass
class ClickGraphConfig:
    iterations: int = 10
    top_words: int = 20
    ctr_prior_strength: float = 20.0   # a: pseudo-impressions at the global CTR
    min_clicks: int = 1
    kl_lambda: float = 0.2


def read_click_edges(logs: str | Path, split: str = "train") -> tuple[dict[tuple[str, str], list[int]], dict[str, int]]:
    """(normalized query, video) → [impressions, clicks] over one split; query → impressions."""
    edges: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    qfreq: dict[str, int] = defaultdict(int)
    with open(logs, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if r.get("split", "train") != split:
                continue
            q = normalize(r["query"])
            e = edges[(q, r["video_id"])]
            e[0] += 1
            e[1] += int(bool(r.get("clicked")))
            if int(r.get("position", 1)) == 1:
                qfreq[q] += 1  # one count per request: position 1 appears once per results page
    return dict(edges), dict(qfreq)


def _component_vectors(texts_tokens: list[list[str]], vectors: sp.csr_matrix, weights: np.ndarray,
                       comp_index: dict[str, int], top_words: int) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for i, toks in enumerate(texts_tokens):
        for c in dict.fromkeys(components(toks)):
            rows.append(comp_index[c])
            cols.append(i)
            vals.append(weights[i])
    X = sp.csr_matrix((vals, (rows, cols)), shape=(len(comp_index), len(texts_tokens)))
    return norm_top(X @ vectors, top_words)


def train_click_graph(logs: str | Path, tokenize: Callable[[str], list[str]], get_docs: Callable[[list[str]], dict[str, dict[str, Any]]],
                      select: Callable[["ClickGraphModel", int], float] | None, cfg: ClickGraphConfig = ClickGraphConfig(),
                      progress: bool = True) -> tuple[ClickGraphModel, list[dict[str, Any]]]:
    """Build the graph from the train split, propagate, keep the iteration `select` scores best
    (AUC on a labelled set; without `select`, the last one). Returns (model, per-iteration log)."""
    from rich.progress import Progress

    edges, qfreq = read_click_edges(logs)
    imps = sum(v[0] for v in edges.values())
    clicks = sum(v[1] for v in edges.values())
    if not edges or clicks == 0:
        raise ValueError(f"{logs}: no clicked impressions in the train split")
    p0 = clicks / imps
    a = cfg.ctr_prior_strength
    kept = [(q, v, (c + a * p0) / (n + a)) for (q, v), (n, c) in edges.items() if c >= cfg.min_clicks]
    queries = sorted({q for q, _, _ in kept})
    qidx = {q: i for i, q in enumerate(queries)}
    video_ids = sorted({v for _, v, _ in kept})
    docs = get_docs(video_ids)
    video_ids = [v for v in video_ids if v in docs]
    vidx = {v: i for i, v in enumerate(video_ids)}
    titles = [list(docs[v].get("_fields", {}).get("title", [])) for v in video_ids]
    qtoks = [tokenize(q) for q in queries]
    vocab_set: dict[str, int] = {}
    for toks in titles + qtoks:
        for t in toks:
            vocab_set.setdefault(t, len(vocab_set))
    vocab = list(vocab_set)
    rows, cols, vals = [], [], []
    for q, v, w in kept:
        if v in vidx:
            rows.append(qidx[q])
            cols.append(vidx[v])
            vals.append(w)
    C = sp.csr_matrix((vals, (rows, cols)), shape=(len(queries), len(video_ids)))
    r0, c0, v0 = [], [], []
    for j, toks in enumerate(titles):
        for t in set(toks):
            r0.append(j)
            c0.append(vocab_set[t])
            v0.append(1.0)
    D0 = sp.csr_matrix((v0, (r0, c0)), shape=(len(video_ids), len(vocab)))
    # n-gram components, their idf over queries and titles
    comp_index: dict[str, int] = {}
    df: dict[str, int] = defaultdict(int)
    for toks in qtoks + titles:
        for c in set(components(toks)):
            comp_index.setdefault(c, len(comp_index))
            df[c] += 1
    n_texts = len(qtoks) + len(titles)
    comp_idf = np.array([math.log((1 + n_texts) / (1 + df[c])) + 1.0 for c in comp_index])
    qdf: dict[str, int] = defaultdict(int)
    for toks in qtoks:
        for c in set(components(toks)):
            qdf[c] += 1
    comp_qdf = np.array([qdf.get(c, 0) for c in comp_index], dtype=np.int64)
    qweights = np.array([math.log1p(qfreq.get(q, 1)) for q in queries])
    vweights = np.ones(len(video_ids))

    history: list[dict[str, Any]] = []
    best: tuple[float, ClickGraphModel | None] = (-1.0, None)
    meta = {"logs": str(logs), "queries": len(queries), "videos": len(video_ids), "edges": int(C.nnz), "vocab": len(vocab),
            "global_ctr": round(p0, 5), "ctr_prior_strength": a, "top_words": cfg.top_words, "split": "train"}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("click-graph propagation", total=cfg.iterations)
        for it, Q, D in propagate(C, D0, cfg.iterations, cfg.top_words):
            QN = _component_vectors(qtoks, Q, qweights, comp_index, cfg.top_words)
            DN = _component_vectors(titles, D, vweights, comp_index, cfg.top_words)
            bg = np.asarray(D.sum(axis=0)).ravel() + 1.0  # add-one: every word has background mass
            bg = bg / bg.sum()
            model = ClickGraphModel(vocab, qidx, vidx, Q, D, comp_index, comp_idf, QN, DN, bg,
                                    dict(meta, iteration=it), cfg.kl_lambda, comp_qdf)
            auc = select(model, it) if select is not None else float(it)
            history.append({"iteration": it, "selection_auc": round(auc, 4) if select is not None else None})
            if auc > best[0]:
                best = (auc, model)
            bar.advance(task)
    model = best[1]
    assert model is not None
    model.meta["history"] = history
    return model, history


def synonym_candidates(model: ClickGraphModel, top: int = 500, per_word: int = 5, min_weight: float = 0.2,
                       min_queries: int = 2, stop_top: int = 30) -> list[tuple[str, str, float, int]]:
    """Strongest query-side associations: for every query word seen in at least `min_queries`
    training queries, the other words of its query-side n-gram vector. Words the candidate
    contains or is contained in, single characters and the `stop_top` most common words of the
    graph (的, the, mv, live: everywhere, so synonyms of nothing) are skipped. Rows
    (word, candidate, weight, queries), ranked by weight · log(1 + queries) — for review before
    they go into the rewrite table."""
    vocab = model.vocab
    common = set(np.argsort(-model.background)[:stop_top].tolist()) if stop_top > 0 else set()
    qdf = model.comp_qdf if model.comp_qdf is not None else np.zeros(len(model.comp_index))
    out = []
    for comp, row in model.comp_index.items():
        if not comp.startswith("w:"):
            continue
        word = comp[2:]
        support = int(qdf[row])
        if support < min_queries:
            continue
        v = model.QN[row]
        n = 0
        for col, w in sorted(zip(v.indices, v.data), key=lambda x: -x[1]):
            cand = vocab[col]
            if w < min_weight or col in common or len(cand) < 2 or cand in word or word in cand:
                continue
            out.append((word, cand, round(float(w), 4), support))
            n += 1
            if n >= per_word:
                break
    out.sort(key=lambda r: (-r[2] * math.log1p(r[3]), r[0]))
    return out[:top]


# --------------------------------------------------------------------------- scorers


class ClickGraphScorer:
    def __init__(self, model: ClickGraphModel, which: str):
        self.model, self.which = model, which
        self.name = f"click_graph_{which}"

    def score_pairs(self, queries: list[UnderstoodQuery], docs: list[dict[str, Any]]) -> np.ndarray:
        cos, kl = self.model.score_pairs(queries, docs)
        return cos if self.which == "cos" else kl

    def both(self, queries: list[UnderstoodQuery], docs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """(cosine, KL similarity) in one pass, for callers that need both (the ensemble)."""
        return self.model.score_pairs(queries, docs)


def load_click_graph(ctx: ScorerContext) -> ClickGraphModel:
    if "click_graph" not in ctx.cache:
        path = (ctx.scorer_params("click_graph").get("model")
                or ctx.config.get("relevance", {}).get("params", {}).get("click_graph_model"))
        if not path:
            raise ScorerUnavailable("no click-graph model: give --click-graph-model (or [relevance.params] click_graph_model)")
        if not Path(path).exists():
            raise ScorerUnavailable(f"click-graph model {path} does not exist; train it with `mvsearch relevance click-graph train`")
        ctx.cache["click_graph"] = ClickGraphModel.load(path)
    return ctx.cache["click_graph"]


register_scorer("click_graph_cos", lambda ctx: ClickGraphScorer(load_click_graph(ctx), "cos"))
register_scorer("click_graph_kl", lambda ctx: ClickGraphScorer(load_click_graph(ctx), "kl"))
