"""The learned ranking stage (`[ranking] impl = "learned"`): a trained model file scores the
candidates with the same FeatureBuilder the trainer used.

- The model file carries its feature schema (dense names, sparse vocabularies, tasks) and the
  fitted feature state; loading refuses a file whose schema differs from what this code's
  FeatureBuilder produces (`SchemaMismatch`, with the differing names).
- A missing model file does not break search: the stage keeps the previous stage's order and says
  so in the response's warnings.
- Up to `max_candidates` (500) candidates are scored in one batch; the rest keep their order below.
- Each candidate's `rank_features` is the exact vector the model saw (named), so the simulator's
  impression log holds the full serve-time snapshot.
- Score = pCTR · pCVR^cvr_exponent (= pCTCVR by default) [· relevance^relevance_exponent]: the page should be what users click
  AND really watch. The position tower is not used: every candidate is scored position-free.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search.contracts import StageInput, StageOutput

from .feature_store import BehaviourState, frozen_profile
from .features import FeatureBuilder, ImpressionContext, QueryInfo, VideoStats
from .models import InputSchema, RankingModel, build_model

log = logging.getLogger("mvsearch.ranking.learned")
FORMAT = "mvsearch-ranker-v1"


class SchemaMismatch(ValueError):
    """The model was trained on other features than the ones this code computes."""


def save_model(path: str | Path, model: RankingModel, builder: FeatureBuilder, meta: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # plain JSON types only (no numpy scalars): the file must load with torch.load(weights_only=True)
    plain = lambda x: json.loads(json.dumps(x, default=float))  # noqa: E731
    obj = {"format": FORMAT, "model": model.name, "params": plain(model.params), "schema": plain(model.schema.to_dict()),
           "features": plain(builder.to_dict()), "state_dict": model.state_dict(), "meta": plain(meta or {})}
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def check_schema(saved: InputSchema, builder: FeatureBuilder, expected: InputSchema | None = None) -> None:
    """Raise SchemaMismatch naming what differs between the model's schema and the features served."""
    served_dense = builder.dense_names()
    served_sparse = {k: len(v) for k, v in builder.vocabs.items()}
    problems = []
    if saved.dense != served_dense:
        miss, extra = sorted(set(saved.dense) - set(served_dense)), sorted(set(served_dense) - set(saved.dense))
        problems.append(f"dense features differ (model has, code lacks: {miss[:8]}; code has, model lacks: {extra[:8]}"
                        + ("; same names in another order" if not miss and not extra else "") + ")")
    if saved.sparse != served_sparse:
        problems.append(f"sparse fields/vocabularies differ: model {saved.sparse} vs features {served_sparse}")
    if expected is not None and expected.signature() != saved.signature():
        problems.append("model schema differs from the expected schema "
                        f"(dense {len(saved.dense)} vs {len(expected.dense)}, sparse {sorted(saved.sparse)} vs {sorted(expected.sparse)}, "
                        f"tasks {saved.tasks} vs {expected.tasks})")
    if problems:
        raise SchemaMismatch("ranking model does not match the feature schema: " + "; ".join(problems)
                             + ". Retrain it with `mvsearch ranking train`.")


def load_model(path: str | Path, expected: InputSchema | None = None) -> tuple[RankingModel, FeatureBuilder, dict[str, Any]]:
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    if obj.get("format") != FORMAT:
        raise SchemaMismatch(f"{path}: not a {FORMAT} model file (format {obj.get('format')!r})")
    schema = InputSchema.from_dict(obj["schema"])
    builder = FeatureBuilder.from_dict(obj["features"])
    check_schema(schema, builder, expected)
    model = build_model(obj["model"], schema, **obj["params"])
    model.load_state_dict(obj["state_dict"])
    model.eval()
    return model, builder, obj.get("meta", {})


class LearnedRanker:
    name = "learned"

    def __init__(self, config: dict[str, Any] | None = None):
        c = config or {}
        self.model_path = Path(c.get("model_path", "var/models/ranker.pt"))
        self.max_candidates = int(c.get("max_candidates", 500))
        self.cvr_exponent = float(c.get("cvr_exponent", 1.0))
        # optional guard: score · relevance^k keeps clearly irrelevant videos down even where the
        # logs (only the old ranker's top 10 was ever shown) taught the model little about them
        self.relevance_exponent = float(c.get("relevance_exponent", 0.0))
        self.num_threads = int(c.get("num_threads", 1))
        self.log_features = bool(c.get("log_features", True))
        self.model: RankingModel | None = None
        self.builder: FeatureBuilder | None = None
        self.load_warning = ""
        if self.model_path.exists():
            self.model, self.builder, self.meta = load_model(self.model_path)   # SchemaMismatch → the pipeline refuses to start
            self.dense_names = self.builder.dense_names()
        else:
            self.load_warning = (f"ranking model {self.model_path} not found; kept the previous stage's order "
                                 "(train one with `mvsearch ranking train`)")
            log.warning(self.load_warning)
        self._lock = threading.Lock()
        fs = c.get("feature_store", "")
        self.state = BehaviourState.load(fs) if fs and Path(fs).exists() else BehaviourState()
        self.feature_store_missing = bool(fs) and not Path(fs).exists()

    # -- live behaviour: the serving loop reports each request's outcomes after it was served --
    def observe(self, user_id: str | None, ts: float, outcomes: list[dict[str, Any]], docs: dict[str, dict[str, Any]]) -> None:
        """Real-time counters and user history move with every request's outcomes (video_id,
        clicked, valid_play, liked); the next request's features see them, this one's did not."""
        with self._lock:
            self.state.record(user_id, ts, outcomes, docs)

    def reset_behaviour(self, state: BehaviourState | None = None) -> None:
        """Start from `state` (default: nothing observed), e.g. when a simulation begins a new world."""
        with self._lock:
            self.state = state or BehaviourState()

    def contexts(self, inp: StageInput, cands: list[Any]) -> list[ImpressionContext]:
        with self._lock:
            self.state.advance_to(inp.now_ts)      # a new day: yesterday's real-time counters are T+1 now
            return self._contexts(inp, cands)

    def _contexts(self, inp: StageInput, cands: list[Any]) -> list[ImpressionContext]:
        q = QueryInfo.from_understood(inp.query)
        user = frozen_profile(self.state.profile(inp.user_id))
        now, st = inp.now_ts, self.state
        empty = VideoStats()
        stats = st.stats_view if st.t1 or st.rt else (lambda vid: empty)   # nothing observed yet: one shared empty record
        return [ImpressionContext(q, c.video_id, c.doc or {}, c.relevance, c.relevance_score, c.grade, c.sources,
                                  stats(c.video_id), user, now) for c in cands]

    def score(self, contexts: list[ImpressionContext]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
        assert self.model is not None and self.builder is not None
        dense, sparse = self.builder.transform(contexts)
        torch.set_num_threads(self.num_threads)
        with torch.no_grad():
            out = self.model({"dense": torch.from_numpy(dense), "sparse": torch.from_numpy(sparse)}, with_position=False)
        probs = {t: torch.sigmoid(v).numpy() for t, v in out.items()}
        tasks = self.model.schema.tasks
        s = probs[tasks[0]].astype(np.float64)
        if len(tasks) > 1 and self.cvr_exponent:
            s = s * probs[tasks[1]] ** self.cvr_exponent
        if self.relevance_exponent:
            s = s * np.maximum([c.relevance_score for c in contexts], 1e-3) ** self.relevance_exponent
        return s, probs, dense, sparse

    def run(self, inp: StageInput) -> StageOutput:
        t0 = time.perf_counter()
        cands = list(inp.candidates)
        if self.model is None:
            for c in cands:
                c.rank_score = c.relevance_score
                c.explain["ranking"] = {"model": self.name, "fallback": "model file missing: previous stage's order"}
            return StageOutput(cands, {"stage": self.name, "fallback": True}, [self.load_warning])
        head, tail = cands[: self.max_candidates], cands[self.max_candidates :]
        warnings = []
        if self.feature_store_missing:
            warnings.append("ranking feature_store file not found: behaviour counters and user history are empty")
        if head:
            t1 = time.perf_counter()
            scores, probs, dense, sparse = self.score(self.contexts(inp, head))
            self.last_score_ms = (time.perf_counter() - t1) * 1000
            snaps = self.builder.snapshots(dense, sparse, self.dense_names) if self.log_features else None
            shown = {"score": np.round(scores, 6).tolist(), **{f"p_{t}": np.round(p, 6).tolist() for t, p in probs.items()}}
            arch = self.model.name
            for i, (c, sc) in enumerate(zip(head, scores.tolist())):
                c.rank_score = sc
                if snaps is not None:
                    c.rank_features = snaps[i]
                c.explain["ranking"] = {"model": self.name, "arch": arch, **{k: v[i] for k, v in shown.items()}}
            head = sorted(head, key=lambda c: (-c.rank_score, c.video_id))
        low = min((c.rank_score for c in head), default=0.0)
        for c in tail:   # beyond the batch: below every scored candidate, in the previous order
            c.rank_score = low - 1.0
        return StageOutput(head + tail, {"stage": self.name, "arch": self.model.name, "scored": len(head),
                                         "ms": round((time.perf_counter() - t0) * 1000, 2)}, warnings)
