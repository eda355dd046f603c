"""The search log as the service writes it (SPEC: Search log).

Two append-only JSONL files in one directory:
- `serve.jsonl`: one line per shown result, written when the page is served, with the feature
  snapshot of that moment (`impression_snapshot`: the ranker's exact vector, relevance, recall
  sources) — the simulator writes the same snapshot;
- `events.jsonl`: what the client reports later for a request (click, play time, like, share,
  follow), one line per video.

`join_logs` turns the two into the SPEC impression log (`logs/impressions.jsonl`, split by day
into train / validation / test), the file `mvsearch ranking train` and `eval ranking` read. The
join never recomputes a feature: training sees what serving saw, joined with later outcomes.
"""
from __future__ import annotations

import json
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .atomic import atomic_path
from .contracts import local_day

def impression_snapshot(c: Any, ranker: str) -> dict[str, Any]:
    """The `features` object of one impression: what the ranker knew when it placed `c`."""
    return {"rank_score": round(c.rank_score, 6), "rank_features": {k: round(v, 6) for k, v in c.rank_features.items()},
            "relevance": {k: round(v, 6) for k, v in c.relevance.items()}, "relevance_score": round(c.relevance_score, 6),
            "grade_pred": c.grade, "sources": dict(c.sources), "ranker": ranker}


def is_valid_play(play_time_s: float, duration_s: float, min_s: float = 30.0, min_share: float = 0.5) -> bool:
    """SPEC: a valid play (有效播放) lasts at least min(30 s, half the video)."""
    return play_time_s >= min(min_s, min_share * duration_s) if duration_s > 0 else play_time_s >= min_s


class ServeLog:
    """Thread-safe appender of served pages and outcome events (one line per write, flushed, so a
    crash loses at most the line being written and never leaves a partial line behind a good one)."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._serve = open(self.dir / "serve.jsonl", "a", encoding="utf-8")
        self._events = open(self.dir / "events.jsonl", "a", encoding="utf-8")

    def served(self, request_id: str, ts: float, user_id: str | None, query: str, hits: list[Any], first_position: int,
               ranker: str) -> None:
        lines = "".join(json.dumps({"request_id": request_id, "ts": round(ts, 3), "user_id": user_id or "", "query": query,
                                    "video_id": c.video_id, "position": first_position + i,
                                    "features": impression_snapshot(c, ranker)}, ensure_ascii=False) + "\n"
                        for i, c in enumerate(hits))
        self._write(self._serve, lines)

    def events(self, request_id: str, user_id: str | None, ts: float, outcomes: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps({"request_id": request_id, "user_id": user_id or "", "ts": round(ts, 3), **o}, ensure_ascii=False) + "\n"
                        for o in outcomes)
        self._write(self._events, lines)

    def _write(self, f: Any, text: str) -> None:
        if not text:
            return
        with self._lock:
            f.write(text)
            f.flush()

    def close(self) -> None:
        with self._lock:
            self._serve.close()
            self._events.close()


@dataclass
class JoinSummary:
    requests: int
    impressions: int
    clicks: int
    events_without_impression: int
    splits: dict[str, list[str]]


OUTCOME_FIELDS = {"clicked": False, "play_time_s": 0.0, "liked": False, "shared": False, "followed": False, "valid_play": False}


def join_logs(log_dir: str | Path, out_dir: str | Path, validation_days: int = 1, test_days: int = 1) -> JoinSummary:
    """serve.jsonl + events.jsonl → OUT/logs/impressions.jsonl in serving order. An impression
    without events was shown and not clicked; the last `test_days` days are test, the
    `validation_days` before them validation, the rest train (split by time, like the simulator)."""
    log_dir = Path(log_dir)
    outcomes: dict[tuple[str, str], dict[str, Any]] = defaultdict(dict)
    for n, line in enumerate(_lines(log_dir / "events.jsonl"), start=1):
        try:
            e = json.loads(line)
            key = (str(e["request_id"]), str(e["video_id"]))
        except (ValueError, KeyError) as err:
            raise ValueError(f"{log_dir / 'events.jsonl'} line {n}: {err}") from err
        o = outcomes[key]
        for k in OUTCOME_FIELDS:       # several events for one impression: any click counts, the longest play
            if k in e:
                o[k] = max(o.get(k, OUTCOME_FIELDS[k]), e[k])
    served = []
    for n, line in enumerate(_lines(log_dir / "serve.jsonl"), start=1):
        try:
            r = json.loads(line)
            _ = r["request_id"], r["video_id"], r["ts"]
        except (ValueError, KeyError) as err:
            raise ValueError(f"{log_dir / 'serve.jsonl'} line {n}: {err}") from err
        served.append(r)
    days = sorted({local_day(r["ts"]) for r in served})
    test = set(days[len(days) - test_days:]) if test_days else set()
    val = set(days[max(0, len(days) - test_days - validation_days): len(days) - test_days]) if validation_days else set()
    used: set[tuple[str, str]] = set()
    out = Path(out_dir) / "logs" / "impressions.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    clicks = 0
    split_days: dict[str, list[int]] = defaultdict(list)
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in served:
            key = (str(r["request_id"]), str(r["video_id"]))
            used.add(key)
            o = {**OUTCOME_FIELDS, **outcomes.get(key, {})}
            d = local_day(r["ts"])
            split = "test" if d in test else "validation" if d in val else "train"
            split_days[split].append(d)
            clicks += bool(o["clicked"])
            f.write(json.dumps({"request_id": r["request_id"], "ts": r["ts"], "user_id": r.get("user_id", ""), "query": r["query"],
                                "video_id": r["video_id"], "position": r["position"], **o, "split": split,
                                "features": r.get("features") or {}}, ensure_ascii=False) + "\n")
    iso = lambda d: datetime.fromtimestamp(d * 86400, timezone.utc).date().isoformat()  # noqa: E731
    return JoinSummary(len({r["request_id"] for r in served}), len(served), clicks, len(set(outcomes) - used),
                       {s: [iso(min(v)), iso(max(v))] for s, v in split_days.items()})


def _lines(path: Path):
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield line
