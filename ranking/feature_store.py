"""Serve-time state for ranking features, and the offline replay that rebuilds it.

`BehaviourState` holds video counters (T+1 = every day before today, real-time = today so far)
and user profiles, and is only ever updated with a request's outcomes AFTER that request's
features were taken — so no feature of an impression can depend on an event after it. The same
class backs both sides:
- offline, `replay_impressions` walks the logs in serving order and, for each request, yields the
  contexts as they were at serve time, then records the request's outcomes;
- online, the state at the end of the logs is saved (`save`) and loaded by the learned ranker.

Training reads the logged snapshot for what the simulator recorded at serve time (relevance,
recall sources, T+1/real-time impression/click/valid-play counters) and takes from the replayed
state only what the snapshot lacks (likes, user history); a test checks the replayed counters
equal the logged ones.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from search.contracts import local_day

from .features import COUNTERS, ImpressionContext, QueryInfo, UserProfile, VideoStats

@dataclass
class BehaviourState:
    t1: dict[str, list[float]] = field(default_factory=dict)
    rt: dict[str, list[float]] = field(default_factory=dict)
    users: dict[str, UserProfile] = field(default_factory=dict)
    day: int | None = None
    as_of: float = 0.0
    # serving reads the same popular videos request after request: their VideoStats are kept until
    # an outcome or the day roll changes them (read-only; see `stats_view`)
    _views: dict[str, VideoStats] = field(default_factory=dict, repr=False, compare=False)

    def advance_to(self, ts: float) -> None:
        """Roll the day: today's real-time counters become T+1 statistics."""
        d = local_day(ts)
        if self.day is None:
            self.day = d
        if d > self.day:
            for vid, c in self.rt.items():
                acc = self.t1.setdefault(vid, [0.0] * len(COUNTERS))
                for i, x in enumerate(c):
                    acc[i] += x
            self.rt = {}
            self.day = d
            self._views.clear()

    def video_stats(self, vid: str) -> VideoStats:
        z = [0.0] * len(COUNTERS)
        return VideoStats(dict(zip(COUNTERS, self.t1.get(vid, z))), dict(zip(COUNTERS, self.rt.get(vid, z))))

    def stats_view(self, vid: str) -> VideoStats:
        """`video_stats` shared between requests until the counters change: callers must not modify it."""
        v = self._views.get(vid)
        if v is None:
            v = self._views[vid] = self.video_stats(vid)
        return v

    def profile(self, user_id: str | None) -> UserProfile | None:
        return self.users.get(user_id) if user_id else None

    def record(self, user_id: str | None, ts: float, outcomes: list[dict[str, Any]], docs: dict[str, dict[str, Any]]) -> None:
        """Apply one request's outcomes (after its features were computed)."""
        self.advance_to(ts)
        self.as_of = max(self.as_of, ts)
        for o in outcomes:
            self._views.pop(o["video_id"], None)
            c = self.rt.setdefault(o["video_id"], [0.0] * len(COUNTERS))
            c[0] += 1
            c[1] += float(bool(o.get("clicked")))
            c[2] += float(bool(o.get("valid_play")))
            c[3] += float(bool(o.get("liked")))
        if not user_id:
            return
        u = self.users.setdefault(user_id, UserProfile())
        u.requests += 1
        u.last_ts = ts
        for o in outcomes:
            if not o.get("clicked"):
                continue
            u.clicks += 1
            u.valid_plays += int(bool(o.get("valid_play")))
            d = docs.get(o["video_id"], {})
            w = 2 if o.get("valid_play") else 1      # a real watch says more about taste than a click
            for a in d.get("artists") or []:
                u.artists[a] = u.artists.get(a, 0) + w
            for key, table in (("language", u.languages), ("category", u.categories)):
                if d.get(key):
                    table[str(d[key])] = table.get(str(d[key]), 0) + w

    def save(self, path: str | Path) -> None:
        obj = {"as_of": self.as_of, "day": self.day, "counters": COUNTERS,
               "t1": self.t1, "rt": self.rt, "users": {k: v.to_dict() for k, v in self.users.items()}}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "BehaviourState":
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        if d.get("counters") != COUNTERS:
            raise ValueError(f"{path}: counters {d.get('counters')} differ from this code's {COUNTERS}")
        return cls(d["t1"], d["rt"], {k: UserProfile.from_dict(v) for k, v in d["users"].items()}, d.get("day"), d.get("as_of", 0.0))


def frozen_profile(u: UserProfile | None) -> UserProfile | None:
    """A copy: the live profile keeps changing after this request, the context must not."""
    if u is None:
        return None
    return UserProfile(u.requests, u.clicks, u.valid_plays, u.last_ts, dict(u.artists), dict(u.languages), dict(u.categories))


def keep_request(request_id: str, rate: float, seed: int = 0) -> bool:
    """Deterministic subsample by request (whole result pages stay together, for GAUC)."""
    if rate >= 1.0:
        return True
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{request_id}".encode(), digest_size=8).digest(), "big")
    return h / 2**64 < rate


def _requests(path: Path) -> Iterator[list[dict[str, Any]]]:
    cur: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if cur and r["request_id"] != cur[0]["request_id"]:
                yield cur
                cur = []
            cur.append(r)
    if cur:
        yield cur


@dataclass
class LoggedImpression:
    context: ImpressionContext
    position: int
    clicked: bool
    valid_play: bool
    split: str
    user_id: str
    query: str
    request_id: str
    logged_vector: dict[str, float] | None = None   # the learned ranker's own snapshot, when it served this impression


def context_from_snapshot(r: dict[str, Any], query: QueryInfo, doc: dict[str, Any], state: BehaviourState,
                          user: UserProfile | None = None) -> ImpressionContext:
    """Rebuild what the ranker saw from the logged snapshot; likes and the user profile come from
    the replayed state as of this moment (logged counters win where they exist)."""
    snap = r.get("features") or {}
    vs = state.video_stats(r["video_id"])
    for span in ("t1", "rt"):
        logged = snap.get(f"{span}_video") or {}
        getattr(vs, span).update({k: float(v) for k, v in logged.items() if k in COUNTERS})
    return ImpressionContext(query, r["video_id"], doc, dict(snap.get("relevance") or {}), float(snap.get("relevance_score") or 0.0),
                             snap.get("grade_pred"), dict(snap.get("sources") or {}), vs, user if user is not None else frozen_profile(state.profile(r.get("user_id"))), float(r["ts"]),
                             example_ts=float(r["ts"]))


def replay_impressions(path: str | Path, understand: Callable[[str], QueryInfo], docs: dict[str, dict[str, Any]],
                       rates: dict[str, float] | None = None, seed: int = 0, state: BehaviourState | None = None,
                       check_counters: bool = False) -> tuple[list[LoggedImpression], BehaviourState]:
    """Walk the log in serving order. For each kept request, contexts are built from the state
    BEFORE the request; then the request's outcomes are recorded. `rates`: subsample per split."""
    rates = rates or {}
    state = state or BehaviourState()
    qcache: dict[str, QueryInfo] = {}
    out: list[LoggedImpression] = []
    mismatches = 0
    for req in _requests(Path(path)):
        r0 = req[0]
        state.advance_to(float(r0["ts"]))
        if keep_request(r0["request_id"], rates.get(r0.get("split", "train"), 1.0), seed):
            q = qcache.get(r0["query"])
            if q is None:
                q = qcache[r0["query"]] = understand(r0["query"])
            user = frozen_profile(state.profile(r0.get("user_id")))
            for r in req:
                doc = docs.get(r["video_id"])
                if doc is None:
                    continue
                ctx = context_from_snapshot(r, q, doc, state, user)
                if check_counters:
                    replayed = state.video_stats(r["video_id"])
                    for span in ("t1", "rt"):
                        logged = (r.get("features") or {}).get(f"{span}_video") or {}
                        mismatches += any(float(v) != getattr(replayed, span)[k] for k, v in logged.items())
                snap = r.get("features") or {}
                logged = snap.get("rank_features") if snap.get("ranker") == "learned" else None
                out.append(LoggedImpression(ctx, int(r["position"]), bool(r["clicked"]), bool(r["valid_play"]), r.get("split", "train"),
                                            str(r.get("user_id") or ""), r0["query"], r0["request_id"], logged))
        state.record(r0.get("user_id"), float(r0["ts"]), req, docs)
    if check_counters and mismatches:
        raise AssertionError(f"{mismatches} impressions whose replayed counters differ from the logged snapshot")
    return out, state
