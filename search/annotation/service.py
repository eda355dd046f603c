"""The annotation tool's operations, shared by the web app and the CLI: create a batch
from a source and a strategy, log in with lockout, quality statistics, export."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from . import export as export_mod
from . import quality, sampling
from .store import AnnotationStore, Batch, Conflict, Invalid, NotFound, PairSpec, User, qid_for

DEFAULTS: dict[str, Any] = {
    "db_path": "var/annotation.sqlite",
    "session_hours": 12,
    "cookie_secure": False,
    "secret": "",
    "top_k": 10,
    "sample_queries": 30,
    "annotators_per_pair": 3,
    "gold_rate": 0.1,
    "max_upload_mb": 20,
    "login_max_failures": 5,
    "login_lockout_minutes": 10,
}


class LockedOut(Conflict):
    status = 429


@dataclass
class BatchRequest:
    """What a new batch is made of (the admin form and `mvsearch annotate batch create`)."""
    name: str
    strategy: str = "search"
    queries: list[str] | None = None          # search/intent/disagreement: run these
    sample_queries: int | None = None          # … or sample this many from the catalog
    logs: Any = None                           # impressions JSONL (path or bytes)
    pairs: Any = None                          # uploaded pairs JSONL (path or bytes)
    gold: Any = None                           # gold pairs JSONL with grades (path or bytes)
    gold_rate: float = 0.1
    annotators: list[str] | None = None        # names; None = every active annotator
    per_pair: int = 3
    top_k: int = 10
    size: int | None = None                    # pairs to sample from the pool (None = all)
    seed: int = 0
    min_impressions: int = 3

    def params(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "queries": len(self.queries or []), "sample_queries": self.sample_queries,
                "logs": bool(self.logs), "pairs": bool(self.pairs), "gold": bool(self.gold), "top_k": self.top_k, "size": self.size,
                "seed": self.seed, "min_impressions": self.min_impressions}


@dataclass
class BatchResult:
    batch: Batch
    pairs: int
    gold: int
    reports: list[sampling.SourceReport] = field(default_factory=list)
    strata: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"batch {self.batch.name!r} (id {self.batch.id}, {self.batch.strategy}): {self.pairs} pairs incl. {self.gold} gold, "
                 f"{self.batch.annotators_per_pair} annotators per pair"]
        if self.strata:
            lines.append("strata: " + ", ".join(f"{k} {v}" for k, v in sorted(self.strata.items())))
        lines += [r.summary() for r in self.reports]
        return "\n".join(lines)


class AnnotationService:
    def __init__(self, store: AnnotationStore, pipeline: Any = None, config: dict[str, Any] | None = None):
        self.store = store
        self.pipeline = pipeline
        self.config = {**DEFAULTS, **(config or {})}

    # --- accounts --------------------------------------------------------------------------------

    def login(self, name: str, password: str, ip: str = "") -> User:
        """Check a login; after `login_max_failures` failures in `login_lockout_minutes` the
        account is locked for that window (LockedOut, HTTP 429). Every attempt is audited."""
        name = (name or "").strip()[:64]
        window = timedelta(minutes=float(self.config["login_lockout_minutes"]))
        if self.store.failed_logins_since(name, self.store.clock() - window) >= int(self.config["login_max_failures"]):
            self.store.record_login(name, False, None, ip)
            raise LockedOut("too many failed logins; try again later")
        user = self.store.verify_password(name, password)
        self.store.record_login(name, user is not None, user, ip)
        if user is None:
            raise Invalid("wrong user name or password")
        return user

    # --- batches ---------------------------------------------------------------------------------

    def _annotators(self, names: list[str] | None) -> list[User]:
        users = self.store.list_users()
        if not names:
            pool = [u for u in users if u.active and u.role == "annotator"]
            if not pool:
                raise Invalid("no active annotators: add some first (mvsearch annotate user add NAME)")
            return pool
        by_name = {u.name: u for u in users}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise Invalid(f"unknown annotators: {', '.join(missing)}")
        return [by_name[n] for n in dict.fromkeys(names)]

    def build_pool(self, req: BatchRequest) -> tuple[list[PairSpec], list[sampling.SourceReport]]:
        """The candidate pairs for the request's source: uploaded pairs, a log, or the live
        search results of given or sampled queries."""
        reports: list[sampling.SourceReport] = []
        if req.strategy == "upload" and req.pairs is None:
            raise Invalid("the upload strategy needs a pairs JSONL")
        if req.strategy == "logs" and req.logs is None:
            raise Invalid("the logs strategy needs an impressions log (JSONL)")
        if req.pairs is not None:
            pool, rep = sampling.from_jsonl(req.pairs, self.pipeline, name="pairs")
            reports.append(rep)
        elif req.logs is not None:
            if self.pipeline is None:
                raise Invalid("pairs from logs need the search index (to show the videos)")
            pool, rep = sampling.from_logs(req.logs, self.pipeline, min_impressions=req.min_impressions)
            reports.append(rep)
        else:
            if self.pipeline is None:
                raise Invalid("pairs from search results need the search index")
            queries = list(req.queries or [])
            if not queries:
                n = int(req.sample_queries or self.config["sample_queries"])
                queries = sampling.sample_queries(self.pipeline, n, seed=req.seed)
                if not queries:
                    raise Invalid("could not sample queries: the catalog has no artists or songs")
            pool, rep = sampling.from_search(self.pipeline, queries, top_k=req.top_k)
            reports.append(rep)
        if not pool:
            raise Invalid("no pairs to label: " + "; ".join(r.summary() for r in reports))
        return pool, reports

    def create_batch(self, req: BatchRequest, actor: User | None = None) -> BatchResult:
        if req.strategy not in sampling.STRATEGIES:
            raise Invalid(f"strategy must be one of {', '.join(sampling.STRATEGIES)}")
        if not 0.0 <= float(req.gold_rate) < 1.0:
            raise Invalid("gold rate must be between 0 and 1")
        if req.per_pair < 1:
            raise Invalid("annotators per pair must be at least 1")
        if self.store.get_batch(name=req.name.strip()) is not None:
            raise Conflict(f"batch {req.name.strip()!r} already exists")
        annotators = self._annotators(req.annotators)
        pool, reports = self.build_pool(req)
        try:
            chosen = sampling.select(req.strategy, pool, req.size, self.pipeline, seed=req.seed)
        except ValueError as e:
            raise Invalid(str(e)) from None
        gold: list[PairSpec] = []
        if req.gold is not None:
            gold, grep = sampling.from_jsonl(req.gold, self.pipeline, gold=True, name="gold")
            reports.append(grep)
            if req.gold_rate > 0 and not gold:
                raise Invalid("the gold file has no usable lines: " + grep.summary())
        ordered = sampling.mix_gold(chosen, gold, float(req.gold_rate), seed=req.seed)
        qids: dict[str, str] = {}
        for p in ordered:
            q = p.qid or qid_for(p.query)
            if qids.setdefault(q, p.query) != p.query:
                raise Invalid(f"qid {q!r} names two different queries ({qids[q]!r} and {p.query!r})")
        per_pair = min(int(req.per_pair), len(annotators))
        batch = self.store.create_batch(req.name, req.strategy, ordered, annotators, per_pair, float(req.gold_rate),
                                        params={**req.params(), "annotators_requested": int(req.per_pair)}, actor=actor, seed=req.seed)
        strata: dict[str, int] = {}
        for p in ordered:
            if not p.is_gold:
                strata[p.stratum or "all"] = strata.get(p.stratum or "all", 0) + 1
        return BatchResult(batch, len(ordered), sum(p.is_gold for p in ordered), reports, strata)

    def batch(self, ref: str | int) -> Batch:
        """A batch by name (or by id, if no batch has that name)."""
        b = self.store.get_batch(name=str(ref))
        if b is None and str(ref).isdigit():
            b = self.store.get_batch(batch_id=int(ref))
        if b is None:
            raise NotFound(f"no batch {ref!r}")
        return b

    # --- quality and export ------------------------------------------------------------------------

    def stats(self, batch_id: int) -> dict[str, Any]:
        labels = self.store.labels_for_batch(batch_id)
        history = [r for r in self.store.labels_for_batch(batch_id, current_only=False) if r["action"] in ("grade", "skip")]
        s = quality.batch_quality(labels, self.store.tasks_for_batch(batch_id), self.store.adjudications_for_batch(batch_id), history)
        s["batch"] = self.store.get_batch(batch_id).name  # type: ignore[union-attr]
        return s

    def disagreements(self, batch_id: int) -> list[dict[str, Any]]:
        pairs = {p["id"]: p for p in self.store.pairs_for_batch(batch_id)}
        return quality.disagreements(self.store.labels_for_batch(batch_id), self.store.adjudications_for_batch(batch_id), pairs)

    def export(self, batch_id: int, method: str = "majority", include_gold: bool = False, min_annotators: int = 1,
               actor: User | None = None) -> tuple[list[dict[str, Any]], export_mod.ExportReport]:
        try:
            rows, rep = export_mod.build_qrels(self.store, batch_id, method, include_gold, min_annotators)
        except ValueError as e:
            raise Invalid(str(e)) from None
        self.store.log_event(actor, "batch.export", "batch", batch_id, batch_id,
                             {"method": method, "include_gold": include_gold, "exported": rep.exported})
        return rows, rep


def fmt_kappa(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
