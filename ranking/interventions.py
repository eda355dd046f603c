"""Operator interventions for the rerank stage: per query, pin a video to a position, boost
(multiply or add to its score) or block (remove) a video. Read from a TOML or JSON file,
applied last (after DPP and scattering) and reported in every touched candidate's explain
and in the stage explain. The file is re-read when its modification time changes, so an
operator's edit takes effect without a restart; an edit that does not parse keeps the last
good rules and says so in the response's warnings.

File format (TOML; JSON is the same structure: {"rules": [...]}):

    [[rules]]
    query = "周杰伦 晴天"              # matched after the pipeline's query normalization
    block = ["v0000123"]
    pin = [{video_id = "v0000042", position = 1}]          # 1-based position
    boost = [{video_id = "v0000007", multiply = 1.5},
             {video_id = "v0000008", add = 0.2}]
"""
from __future__ import annotations

import json
import math
import os
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from query_understanding.normalize import normalize
from search.contracts import Candidate


class InterventionError(ValueError):
    """The intervention file is missing or malformed (message names the file and the rule)."""


@dataclass(frozen=True)
class Pin:
    video_id: str
    position: int  # 1-based


@dataclass(frozen=True)
class Boost:
    video_id: str
    multiply: float = 1.0
    add: float = 0.0


@dataclass
class Rule:
    query: str
    pins: list[Pin] = field(default_factory=list)
    boosts: list[Boost] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)


_RULE_KEYS = {"query", "pin", "boost", "block", "note"}


def _video_id(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise InterventionError(f"{where}: video_id must be a non-empty string, got {v!r}")
    return v.strip()


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise InterventionError(f"{where}: must be a finite number, got {v!r}")
    return float(v)


def parse_rules(data: Any, source: str = "<interventions>") -> dict[str, Rule]:
    """Validate the decoded file; rules keyed by normalized query. Every error names the
    file and the rule number (1-based), so an operator can fix it."""
    if not isinstance(data, dict):
        raise InterventionError(f"{source}: the top level must be a table/object with a 'rules' list")
    unknown = set(data) - {"rules", "version"}
    if unknown:
        raise InterventionError(f"{source}: unknown top-level keys {sorted(unknown)} (expected 'rules')")
    rules_raw = data.get("rules", [])
    if not isinstance(rules_raw, list):
        raise InterventionError(f"{source}: 'rules' must be a list ([[rules]] in TOML)")
    out: dict[str, Rule] = {}
    for i, r in enumerate(rules_raw, 1):
        where = f"{source}: rule {i}"
        if not isinstance(r, dict):
            raise InterventionError(f"{where}: must be a table/object")
        bad = set(r) - _RULE_KEYS
        if bad:
            raise InterventionError(f"{where}: unknown keys {sorted(bad)} (allowed: {sorted(_RULE_KEYS)})")
        q = r.get("query")
        if not isinstance(q, str) or not normalize(q):
            raise InterventionError(f"{where}: 'query' must be a non-empty string, got {q!r}")
        key = normalize(q)
        if key in out:
            raise InterventionError(f"{where}: query {q!r} (normalized {key!r}) already has a rule; merge them")
        rule = Rule(query=key)
        for j, p in enumerate(r.get("pin", []) or [], 1):
            w = f"{where} pin {j}"
            if not isinstance(p, dict) or set(p) != {"video_id", "position"}:
                raise InterventionError(f"{w}: must be {{video_id = \"...\", position = N}}, got {p!r}")
            pos = p["position"]
            if isinstance(pos, bool) or not isinstance(pos, int) or pos < 1:
                raise InterventionError(f"{w}: position must be an integer >= 1, got {pos!r}")
            rule.pins.append(Pin(_video_id(p["video_id"], w), pos))
        for j, b in enumerate(r.get("boost", []) or [], 1):
            w = f"{where} boost {j}"
            if not isinstance(b, dict) or "video_id" not in b or set(b) - {"video_id", "multiply", "add"} \
                    or ("multiply" in b) == ("add" in b):
                raise InterventionError(f"{w}: must be {{video_id = \"...\", multiply = X}} or {{video_id = \"...\", add = X}}, got {b!r}")
            if "multiply" in b:
                m = _number(b["multiply"], f"{w} multiply")
                if m < 0:
                    raise InterventionError(f"{w}: multiply must be >= 0, got {m}")
                rule.boosts.append(Boost(_video_id(b["video_id"], w), multiply=m))
            else:
                rule.boosts.append(Boost(_video_id(b["video_id"], w), add=_number(b["add"], f"{w} add")))
        blocks = r.get("block", []) or []
        if not isinstance(blocks, list):
            raise InterventionError(f"{where}: 'block' must be a list of video ids")
        rule.blocks = [_video_id(v, f"{where} block") for v in blocks]
        pinned = [p.video_id for p in rule.pins]
        if len(set(pinned)) != len(pinned):
            raise InterventionError(f"{where}: a video is pinned twice")
        if len({p.position for p in rule.pins}) != len(rule.pins):
            raise InterventionError(f"{where}: two videos pinned to the same position")
        clash = set(pinned) & set(rule.blocks)
        if clash:
            raise InterventionError(f"{where}: {sorted(clash)} both pinned and blocked")
        out[key] = rule
    return out


def load_rules(path: str | Path) -> dict[str, Rule]:
    p = Path(path)
    if not p.exists():
        raise InterventionError(f"intervention file not found: {p}")
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise InterventionError(f"{p}: intervention file must end in .toml or .json")
    except json.JSONDecodeError as e:
        raise InterventionError(f"{p}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except tomllib.TOMLDecodeError as e:
        raise InterventionError(f"{p}: invalid TOML: {e}") from e
    return parse_rules(data, str(p))


class Interventions:
    """The rules of one file, re-read when the file's mtime changes. A bad file at start-up
    raises; a bad edit later keeps the previous rules and reports a warning."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime = self._stat()
        self.rules = load_rules(self.path)
        self.reloads = 0
        self._bad: str | None = None

    def _stat(self) -> int | None:
        try:
            return os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return None

    def refresh(self) -> str | None:
        """Reload if the file changed; returns a warning when the new version is unusable."""
        mt = self._stat()
        if mt == self._mtime:
            return None
        with self._lock:
            if mt == self._mtime:
                return None
            try:
                rules = load_rules(self.path)
            except InterventionError as e:
                self._mtime = mt  # warn once per bad version, not on every query
                self._bad = str(e)
                return f"intervention file not reloaded, previous rules kept: {e}"
            self.rules, self._mtime = rules, mt
            self._bad = None
            self.reloads += 1
            return None

    def rule_for(self, normalized_query: str) -> Rule | None:
        return self.rules.get(normalize(normalized_query))


def apply_rule(rule: Rule, cands: list[Candidate], fetch_docs: Callable[[list[str]], dict[str, dict[str, Any]]] | None
               ) -> tuple[list[Candidate], dict[str, Any], list[str]]:
    """Block, then boost, then pin (pins win: an operator's position is final). Returns the
    new order, the stage explain and warnings. Each touched candidate gets
    explain["rerank"]["intervention"]."""
    warnings: list[str] = []
    ex: dict[str, Any] = {"query": rule.query, "blocked": [], "boosted": [], "pinned": []}
    blocked = set(rule.blocks)
    kept = []
    for c in cands:
        if c.video_id in blocked:
            ex["blocked"].append(c.video_id)
        else:
            kept.append(c)
    cands = kept
    for b in rule.boosts:
        i = next((n for n, c in enumerate(cands) if c.video_id == b.video_id), None)
        if i is None:
            warnings.append(f"intervention boost: video {b.video_id} is not among the results for {rule.query!r}")
            continue
        c = cands.pop(i)
        before = c.rank_score
        c.rank_score = before * b.multiply + b.add
        # The list is no longer sorted by score after DPP, so "re-sort" means: move the
        # boosted video just before the first video (in the current order) whose score is
        # now lower than its own, leaving everyone else's relative order alone.
        to = next((n for n, o in enumerate(cands) if o.rank_score < c.rank_score), len(cands))
        cands.insert(to, c)
        info = {"multiply": b.multiply} if b.add == 0.0 else {"add": b.add}
        info.update(score_before=round(before, 6), score_after=round(c.rank_score, 6), position_before=i + 1, position_after=to + 1)
        c.explain.setdefault("rerank", {})["intervention"] = {"boost": info}
        ex["boosted"].append({"video_id": c.video_id, **info})
    if rule.pins:
        pinned_ids = {p.video_id for p in rule.pins}
        where = {c.video_id: (n, c) for n, c in enumerate(cands) if c.video_id in pinned_ids}
        missing = [p.video_id for p in rule.pins if p.video_id not in where]
        docs = fetch_docs(missing) if (missing and fetch_docs) else {}
        rest = [c for c in cands if c.video_id not in pinned_ids]
        for p in sorted(rule.pins, key=lambda p: p.position):  # ascending: earlier pins never shift later ones
            if p.video_id in where:
                before, c = where[p.video_id]
                before += 1
            elif p.video_id in docs:
                # Pinned videos the engine did not retrieve are still shown: the operator asked for them.
                c = Candidate(p.video_id, sources={"intervention": 1.0}, doc=docs[p.video_id])
                before = None
            else:
                warnings.append(f"intervention pin: video {p.video_id} is not in the index; pin for {rule.query!r} ignored")
                continue
            to = min(p.position, len(rest) + 1)
            rest.insert(to - 1, c)
            info = {"position": p.position, "position_before": before, "position_after": to}
            c.explain.setdefault("rerank", {})["intervention"] = {**c.explain.get("rerank", {}).get("intervention", {}), "pin": info}
            ex["pinned"].append({"video_id": p.video_id, **info})
        cands = rest
    return cands, ex, warnings


__all__ = ["Interventions", "InterventionError", "Rule", "Pin", "Boost", "load_rules", "parse_rules", "apply_rule"]
