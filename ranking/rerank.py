"""Rerank stage. Baseline: identity (keeps the ranker's order and says so in `explain`).

`DiversityRerank` (impl "dpp") runs, in this order, on the ranker's list:
1. DPP: the top `top_n` candidates → `k` picked by greedy MAP on L = diag(r)·S·diag(r)
   (ranking/dpp.py; full or sliding window), the rest of the top_n and everything below
   appended in the ranker's order;
2. rule scattering: same song or same uploader not within `scatter_window` consecutive
   positions (a greedy pass that postpones violators, order otherwise kept);
3. relevance filtering: a result the relevance stage graded 0 leaves page one when better
   ones exist (`relevance.demote_grade0`; the ranker re-sorts, so this must come after it);
4. operator interventions (block, boost, pin) from a file, last, so an operator always wins.
"Same song" and "same uploader" stop counting (prior and scattering) for a query that names
that song or uploader: its good results all share it. Every candidate's explain["rerank"]
says where it came from and why it moved.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from search.contracts import Candidate, StageInput, StageOutput

from .dpp import dpp_kernel, greedy_map, greedy_map_window, relevance_weights, similarity


def demote_irrelevant(cands: list[Candidate], page_size: int) -> tuple[list[Candidate], int]:
    """Grade-0 results behind all better ones (page_size <= 0: off); returns (order, moved off page one)."""
    if page_size <= 0:
        return cands, 0
    from relevance import demote_grade0

    out = demote_grade0(cands, page_size)
    return out, sum(1 for c in out[page_size:] if c.explain.get("relevance", {}).get("demoted"))


class IdentityRerank:
    """Keeps the ranker's order, except that predicted grade-0 results leave page one."""

    name = "identity"

    def __init__(self, config: dict[str, Any] | None = None):
        self.config = config or {}
        self.page_size = int(self.config.get("demote_grade0_page", 10))

    def run(self, inp: StageInput) -> StageOutput:
        before = {id(c): n for n, c in enumerate(inp.candidates)}
        cands, demoted = demote_irrelevant(list(inp.candidates), self.page_size)
        for pos, c in enumerate(cands):
            c.explain["rerank"] = {"stage": self.name, "position_change": before[id(c)] - pos}
        return StageOutput(cands, {"stage": self.name, "demoted_grade0": demoted})


# -- diversity keys -------------------------------------------------------------------------

def _fields(doc: dict[str, Any] | None) -> dict[str, Any]:
    return (doc or {}).get("_fields") or {}


def song_key(doc: dict[str, Any] | None) -> str | None:
    """Which song a video is of. The catalog has a `songs` list (normalized in the doc
    store's `song_kw`); the first one is the video's song (medleys list several; 4% of the
    demo catalog). A video without a song falls back to its normalized title, so two
    re-uploads of the same untagged clip still count as the same song."""
    f = _fields(doc)
    songs = f.get("song_kw") or []
    if songs:
        return "song:" + songs[0]
    title = f.get("title_raw") or []
    if title:
        return "title:" + title[0]
    raw = (doc or {}).get("title")
    return ("title:" + raw.strip().lower()) if raw else None


def uploader_key(doc: dict[str, Any] | None) -> str | None:
    up = _fields(doc).get("uploader_raw") or (doc or {}).get("uploader") or ""
    return up or None


def doc_vectors(embedder: Any, docs: list[dict[str, Any] | None]) -> np.ndarray:
    """The video's LSA vector, recomputed from its stored tokens with the bundle's embedder:
    the same function the indexer used (search/documents.py `embedding_tokens`), so it
    equals the indexed vector and works for both engines without reaching into either."""
    from search.documents import embedding_tokens

    toks = []
    for d in docs:
        f = _fields(d)
        toks.append(embedding_tokens(f) if all(k in f for k in ("title", "artists", "songs", "tags")) else [])
    return embedder.encode_many(toks)


def mean_pairwise_cosine(vectors: np.ndarray) -> float | None:
    """Intra-list similarity: mean cosine over all pairs (None for fewer than 2 items)."""
    n = vectors.shape[0]
    if n < 2:
        return None
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    e = vectors / np.where(norms == 0, 1.0, norms)
    s = e @ e.T
    return float((s.sum() - np.trace(s)) / (n * (n - 1)))


# -- scattering -----------------------------------------------------------------------------

def scatter(keys: list[tuple[str | None, ...]], window: int) -> tuple[list[int], list[int]]:
    """Greedy rule scattering: returns a permutation (indices into `keys`) in which no two
    items among any `window` consecutive positions share a key (each tuple position is one
    rule, e.g. (song, uploader); None never clashes), and each item's postponement.

    At every position the first remaining item (in the input order) that clashes with none of
    the window − 1 items before it is placed; if every remaining item clashes, the first one
    is placed anyway (the rule cannot be met, e.g. all results from one uploader): order is
    never lost, only delayed."""
    n = len(keys)
    if window <= 1 or n <= 1:
        return list(range(n)), [0] * n
    rules = len(keys[0])
    remaining = list(range(n))
    out: list[int] = []
    for _ in range(n):
        recent = out[-(window - 1):]
        banned = [{keys[j][r] for j in recent} - {None} for r in range(rules)]
        pick = 0
        for pos, i in enumerate(remaining):
            if not any(keys[i][r] in banned[r] for r in range(rules)):
                pick = pos
                break
        out.append(remaining.pop(pick))
    return out, [max(0, newpos - i) for newpos, i in sorted(((p, i) for p, i in enumerate(out)), key=lambda t: t[1])]


# -- the stage ------------------------------------------------------------------------------

@dataclass
class DppParams:
    dpp: bool = True                    # false: only scattering + interventions
    theta: float = 0.95                 # Chen et al.'s relevance/diversity trade-off in [0, 1) (0.95: see README figures)
    window: int = 0                     # sliding window (0 = full greedy over the k picks)
    top_n: int = 100                    # candidates the DPP sees
    k: int = 50                         # picks; the rest keeps the ranker's order after them
    relevance: str = "exp"              # exp: r = exp(α(θ)·s) | linear: r = s + floor
    score_norm: str = "minmax"          # scores → [0, 1] over the top_n before r (θ independent of the ranker's scale)
    song_prior: float = 0.3             # S += w·[same song] (normalized back to a unit diagonal)
    uploader_prior: float = 0.2         # S += w·[same uploader]
    scatter_window: int = 2             # same song / uploader not within this many consecutive positions (2 = not adjacent; 0/1 = off)
    scatter_depth: int = 100            # positions the scattering pass rearranges
    scatter_song: bool = True
    song_diversity: str = "auto"        # auto: no song prior / song scattering when the query names a song | always | never
    uploader_diversity: str = "auto"    # auto: no uploader prior / scattering when the query names an uploader | always | never
    scatter_uploader: bool = True
    interventions: str = ""             # TOML or JSON file of pins / boosts / blocks ("" = none)
    demote_grade0_page: int = 10        # predicted grade-0 results leave the first this-many positions (0 = off)
    epsilon: float = 1e-9

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DppParams":
        known = {f.name: f for f in fields(cls)}
        bad = set(d) - set(known)
        if bad:
            raise ValueError(f"[rerank.params] unknown keys {sorted(bad)}; known: {sorted(known)}")
        base = cls()
        vals = {}
        for k, f in known.items():
            v = d.get(k, getattr(base, k))
            t = type(getattr(base, k))
            if t is bool and not isinstance(v, bool):
                raise ValueError(f"[rerank.params] {k} must be true or false, got {v!r}")
            vals[k] = t(v)
        p = cls(**vals)
        if not 0.0 <= p.theta < 1.0:
            raise ValueError(f"[rerank.params] theta must be in [0, 1), got {p.theta}")
        for name in ("song_diversity", "uploader_diversity"):
            if getattr(p, name) not in ("auto", "always", "never"):
                raise ValueError(f"[rerank.params] {name} must be auto, always or never, got {getattr(p, name)!r}")
        if p.window < 0 or p.top_n < 1 or p.k < 0 or p.scatter_window < 0 or p.scatter_depth < 0:
            raise ValueError("[rerank.params] window, k, scatter_window, scatter_depth must be >= 0 and top_n >= 1")
        return p


_BLAS: list[Any] = []


def _one_blas_thread():
    """The DPP's matrices are small (top_n ≤ a few hundred): a multi-threaded BLAS only adds
    synchronization, and on a loaded machine it made the stage ~100× slower (30 ms instead
    of 0.2 ms for the 100×64 similarity, measured). Limit BLAS to one thread around the math
    only (threadpoolctl, a scikit-learn dependency), not process-wide."""
    import contextlib

    try:
        if not _BLAS:
            from threadpoolctl import ThreadpoolController

            _BLAS.append(ThreadpoolController())
        return _BLAS[0].limit(limits=1, user_api="blas")
    except Exception:  # threadpoolctl missing or unable to inspect: run with the default threads
        return contextlib.nullcontext()


class DiversityRerank:
    name = "dpp"
    VECTOR_CACHE = 50_000  # videos; popular videos come back for many queries

    def __init__(self, config: dict[str, Any] | None = None, embedder: Any = None,
                 fetch_docs: Callable[[list[str]], dict[str, dict[str, Any]]] | None = None):
        self.p = DppParams.from_dict(dict(config or {}))
        self.embedder = embedder
        self.fetch_docs = fetch_docs
        self.interventions = None
        if self.p.interventions:
            from .interventions import Interventions

            self.interventions = Interventions(Path(self.p.interventions))
        self._vec_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # the API serves requests from a thread pool

    def _vectors(self, cands: list[Candidate]) -> np.ndarray:
        dims = self.embedder.dims
        out = np.zeros((len(cands), dims), dtype=np.float32)
        todo = []
        with self._lock:
            for i, c in enumerate(cands):
                v = self._vec_cache.get(c.video_id)
                if v is None:
                    todo.append(i)
                else:
                    out[i] = v
        if todo:
            vs = doc_vectors(self.embedder, [cands[i].doc for i in todo])
            with self._lock:
                for i, v in zip(todo, vs):
                    out[i] = v
                    self._vec_cache[cands[i].video_id] = v
                while len(self._vec_cache) > self.VECTOR_CACHE:
                    self._vec_cache.popitem(last=False)
        return out

    def _rules(self, query: Any, cands: list[Candidate]) -> tuple[bool, bool, dict[str, str]]:
        """Whether "same song" and "same uploader" count as similar for this query (auto).

        A user who typed a song (周杰伦 晴天) asked for that song: every good result shares
        it, and spreading songs pushes the answers down. Likewise for an uploader's name
        (一只柚子弹唱): on the simulated judged set uploader scattering cost 5 NDCG@10 points,
        almost all of it on such queries. A query names a song when understanding tagged a
        song entity or the query contains a candidate's song name; an uploader when the
        intent is `uploader` or the query contains a candidate's uploader name (≥ 2 chars,
        spaces ignored)."""
        p = self.p
        q = (getattr(query, "normalized", "") or "").replace(" ", "")
        reasons: dict[str, str] = {}
        intents = getattr(query, "intents", None) or {}
        top_intent = max(intents, key=intents.get) if intents else None

        def named(kind: str, key_of: Callable[[dict[str, Any] | None], str | None]) -> bool:
            if kind == "song" and any(getattr(e, "type", None) == "song" for e in getattr(query, "entities", []) or []):
                reasons[kind] = "query has a song entity"
                return True
            if top_intent == kind:
                reasons[kind] = f"query intent {kind}"
                return True
            for c in cands[: p.top_n]:
                k = key_of(c.doc)
                name = (k.split(":", 1)[1] if kind == "song" and k and k.startswith("song:") else k if kind == "uploader" else None)
                name = (name or "").replace(" ", "")
                if len(name) >= 2 and name in q:
                    reasons[kind] = f"query contains the {kind} {name!r}"
                    return True
            return False

        song = p.song_diversity == "always" or (p.song_diversity == "auto" and not named("song", song_key))
        uploader = p.uploader_diversity == "always" or (p.uploader_diversity == "auto" and not named("uploader", uploader_key))
        return song, uploader, reasons

    def _dpp(self, cands: list[Candidate], warnings: list[str], song_rules: bool = True, uploader_rules: bool = True
             ) -> tuple[list[Candidate], dict[str, Any]]:
        p = self.p
        head, tail = cands[: p.top_n], cands[p.top_n :]
        if len(head) < 2 or p.k == 0:
            return cands, {"applied": False, "reason": "fewer than 2 candidates" if len(head) < 2 else "k = 0"}
        if self.embedder is not None:
            vecs = self._vectors(head)
        else:
            warnings.append("rerank dpp: the index bundle has no embedder; similarity from song/uploader priors only")
            vecs = np.zeros((len(head), 1), dtype=np.float32)
        priors = []
        if p.song_prior > 0 and song_rules:
            priors.append(([song_key(c.doc) for c in head], p.song_prior))
        if p.uploader_prior > 0 and uploader_rules:
            priors.append(([uploader_key(c.doc) for c in head], p.uploader_prior))
        k = min(p.k, len(head))
        with _one_blas_thread():
            sim = similarity(vecs, priors)
            r = relevance_weights([c.rank_score for c in head], p.theta, p.relevance, p.score_norm)
            L = dpp_kernel(r, sim)
            if p.window and p.window < k:
                picked, gains = greedy_map_window(L, k, p.window, p.epsilon)
            else:
                picked, gains = greedy_map(L, k, p.epsilon)
        chosen = set(picked)
        for n, (i, g) in enumerate(zip(picked, gains)):
            head[i].explain.setdefault("rerank", {})["dpp"] = {"pick": n + 1, "gain": round(g, 6), "relevance_weight": round(float(r[i]), 4)}
        rest = [c for i, c in enumerate(head) if i not in chosen]
        for c in rest:
            c.explain.setdefault("rerank", {})["dpp"] = {"pick": None, "note": "not picked: appended in the ranker's order"}
        order = [head[i] for i in picked] + rest + tail
        top = min(10, len(head))
        ils_before = mean_pairwise_cosine(vecs[:top]) if self.embedder is not None else None
        ils_after = mean_pairwise_cosine(vecs[[picked[i] for i in range(min(top, len(picked)))]]) if self.embedder is not None else None
        return order, {"applied": True, "candidates": len(head), "picked": len(picked), "window": p.window or None,
                       "stopped_early": len(picked) < k,
                       "ils@10_before": None if ils_before is None else round(ils_before, 4),
                       "ils@10_after": None if ils_after is None else round(ils_after, 4)}

    def _scatter(self, cands: list[Candidate], song_rules: bool = True, uploader_rules: bool = True) -> tuple[list[Candidate], dict[str, Any]]:
        p = self.p
        depth = min(p.scatter_depth, len(cands))
        head, tail = cands[:depth], cands[depth:]
        keys = [((song_key(c.doc) if p.scatter_song and song_rules else None), (uploader_key(c.doc) if p.scatter_uploader and uploader_rules else None)) for c in head]
        perm, delays = scatter(keys, p.scatter_window)
        postponed = 0
        for i, d in enumerate(delays):
            if d:
                postponed += 1
                head[i].explain.setdefault("rerank", {})["scatter"] = {"postponed_by": d}
        return [head[i] for i in perm] + tail, {"window": p.scatter_window, "depth": depth, "postponed": postponed}

    def run(self, inp: StageInput) -> StageOutput:
        t0 = time.perf_counter()
        p = self.p
        warnings: list[str] = []
        before = {c.video_id: n for n, c in enumerate(inp.candidates, 1)}
        for c in inp.candidates:
            c.explain["rerank"] = {"stage": self.name}
        cands = list(inp.candidates)
        song_rules, uploader_rules, reasons = self._rules(inp.query, cands)
        ex: dict[str, Any] = {"stage": self.name, "theta": p.theta, "top_n": p.top_n, "k": p.k,
                              "song_rules": song_rules, "uploader_rules": uploader_rules}
        if reasons:
            ex["rules_off_because"] = reasons
        if p.dpp:
            cands, ex["dpp"] = self._dpp(cands, warnings, song_rules, uploader_rules)
        if p.scatter_window > 1 and ((p.scatter_song and song_rules) or (p.scatter_uploader and uploader_rules)):
            cands, ex["scatter"] = self._scatter(cands, song_rules, uploader_rules)
        cands, ex["demoted_grade0"] = demote_irrelevant(cands, p.demote_grade0_page)
        if self.interventions is not None:
            from .interventions import apply_rule

            w = self.interventions.refresh()
            if w:
                warnings.append(w)
            rule = self.interventions.rule_for(inp.query.normalized)
            ex["interventions"] = {"file": str(self.interventions.path), "rules": len(self.interventions.rules), "matched": rule is not None}
            if rule is not None:
                cands, iex, iw = apply_rule(rule, cands, self.fetch_docs)
                ex["interventions"].update(iex)
                warnings.extend(iw)
                for c in cands:
                    c.explain.setdefault("rerank", {"stage": self.name})
        moved = 0
        for n, c in enumerate(cands, 1):
            b = before.get(c.video_id)
            c.explain["rerank"].update(position_before=b, position_after=n, position_change=(b - n) if b is not None else None)
            moved += b != n
        ex["moved"] = moved
        ex["ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return StageOutput(cands, ex, warnings)
