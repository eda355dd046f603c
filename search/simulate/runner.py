"""The serving loop: simulated users search the catalog through our own pipeline, what was
shown is logged in the SPEC's impression schema with the feature snapshot the ranker saw,
and behaviour follows the click model. Logs, T+1 aggregates, real-time counters, splits by
time, and judged sets are written to one output directory."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import tempfile
import time
import tomllib
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from query_understanding.normalize import normalize
from search.catalog import read_catalog
from search.config import _merge
from search.kb import load_kb
from search.pipeline import Retrieval, SearchPipeline, SearchRequest
from search.serve_log import impression_snapshot

from .behaviour import ClickModel
from .population import make_population
from .queries import HomophoneTable, NoiseRates, QueryGenerator, add_noise, clean_text
from .truth import Judge, QueryIntent, load_catalog_truth, truth_from_metadata

DEFAULT_SIM_CONFIG = Path(__file__).with_name("default_sim.toml")


def load_sim_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = tomllib.loads(DEFAULT_SIM_CONFIG.read_text(encoding="utf-8"))
    if path:
        cfg = _merge(cfg, tomllib.loads(Path(path).read_text(encoding="utf-8")))
    if overrides:
        cfg = _merge(cfg, {k: v for k, v in overrides.items() if v is not None})
    return cfg


@dataclass
class SimSummary:
    requests: int = 0
    impressions: int = 0
    clicks: int = 0
    valid_plays: int = 0
    users: int = 0
    sessions: int = 0
    reformulations: int = 0
    noisy_queries: int = 0
    pipeline_calls: int = 0
    seconds: float = 0.0
    ctr_by_position: list[float] = field(default_factory=list)
    ctr_by_grade: dict[int, float] = field(default_factory=dict)
    valid_play_rate: float = 0.0
    splits: dict[str, list[str]] = field(default_factory=dict)

    def table(self) -> str:
        lines = [f"users {self.users}, sessions {self.sessions}, requests {self.requests}, impressions {self.impressions} "
                 f"({self.pipeline_calls} pipeline calls, {self.seconds:.0f}s)",
                 f"CTR {self.clicks / max(1, self.impressions):.4f}, valid-play rate (valid plays / clicks) {self.valid_play_rate:.3f}, "
                 f"noisy queries {self.noisy_queries / max(1, self.requests):.3f}, reformulations {self.reformulations}",
                 "CTR by position: " + "  ".join(f"{i + 1}:{c:.3f}" for i, c in enumerate(self.ctr_by_position)),
                 "CTR by hidden grade: " + "  ".join(f"{g}:{c:.3f}" for g, c in sorted(self.ctr_by_grade.items()))]
        return "\n".join(lines)


class _AtomicDir:
    """Write every output into DIR.tmp-XXXX, then rename over DIR: a crash never leaves half a log."""

    def __init__(self, out: Path):
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))

    def path(self, rel: str) -> Path:
        p = self.tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def commit(self) -> None:
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{int(time.time())}")
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _ts(dt: datetime) -> float:
    return dt.timestamp()


def simulate(catalog: str | Path, out: str | Path, pipeline: SearchPipeline, cfg: dict[str, Any], progress: bool = True) -> SimSummary:
    from rich.progress import Progress

    t0 = time.time()
    rng = random.Random(int(cfg["seed"]))
    # common random numbers (for A/B arms): who searches what each day comes from `rng` alone, and
    # clicks / reformulations from their own stream, so the same sessions reach every arm whatever
    # each arm showed. Off by default: it would change the worlds already simulated with one stream.
    brng = random.Random(int(cfg["seed"]) * 1_000_003 + 1) if cfg.get("common_random_numbers") else rng
    kb = load_kb()
    videos_list, report = read_catalog(catalog)
    videos = {v.video_id: {**v.model_dump(mode="json"), "_publish_ts": v.publish_ts} for v in videos_list}
    truth = load_catalog_truth(catalog)
    for vid, v in videos.items():
        if vid not in truth:
            truth[vid] = truth_from_metadata(v, kb)
    judge = Judge(kb)
    clicks = ClickModel(cfg)
    qgen = QueryGenerator(kb, truth, videos, cfg["intents"], rng)
    homophones = HomophoneTable(kb)
    noise = NoiseRates.from_dict(cfg["noise"])
    days = int(cfg["days"])
    users = make_population(int(cfg["users"]), qgen.artists_by_popularity(), days, rng, float(cfg["new_user_share"]))
    start = datetime.fromisoformat(cfg["start"])
    n_test, n_val = int(cfg["split"]["test_days"]), int(cfg["split"]["validation_days"])
    def split_of(day: int) -> str:
        return "test" if day >= days - n_test else ("validation" if day >= days - n_test - n_val else "train")

    w = _AtomicDir(Path(out))
    summ = SimSummary(users=len(users))
    pos_imp, pos_clk = [0] * int(cfg["page_size"]), [0] * int(cfg["page_size"])
    grade_imp, grade_clk = defaultdict(int), defaultdict(int)
    cache: dict[tuple[str, int], list[dict[str, Any]]] = {}
    t1: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])      # cumulative up to yesterday: imp, clk, valid
    rt: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])      # today so far
    intents_seen: dict[str, dict[str, Any]] = {}
    pair_grades: dict[tuple[str, str], int] = {}
    noisy_queries: dict[str, dict[str, str]] = {}
    sess_seq = 0
    pool = None
    workers = int(cfg.get("workers", 0))
    if workers > 0:
        import multiprocessing as mp

        # spawn, not fork: tantivy/faiss/jieba state is not fork-safe; each worker opens the
        # same index with the same config, so its answers equal the main process's.
        pool = mp.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(pipeline.config,))
    try:
        imp_f = open(w.path("logs/impressions.jsonl"), "w", encoding="utf-8")
        ses_f = open(w.path("logs/sessions.jsonl"), "w", encoding="utf-8")
        vday_f = open(w.path("aggregates/video_daily.jsonl"), "w", encoding="utf-8")
        qvday_f = open(w.path("aggregates/query_video_daily.jsonl"), "w", encoding="utf-8")
        page = int(cfg["page_size"])
        ranker = summ_ranker(pipeline)
        # A ranker that keeps behaviour state (the learned one: real-time counters, user history)
        # is served per request with the user, and hears each request's outcomes; it starts
        # this world with nothing observed, like the simulator's own counters.
        stateful = bool(pipeline.behaviour_stages())
        if stateful and cfg.get("reset_ranker_state", True):
            for st in pipeline.behaviour_stages():
                st.reset_behaviour()
        retrievals: OrderedDict[tuple[str, int], Retrieval] = OrderedDict()
        retrieval_cap = int(cfg.get("retrieval_cache", 3000))
        rank_window = int(cfg.get("rank_candidates", 200))

        def week_now(day: int) -> float:
            return _ts(start + timedelta(days=(day // 7) * 7))

        def retrieval(query: str, day: int) -> Retrieval:
            key = (normalize(query), day // 7)
            r = retrievals.get(key)
            if r is None:
                r = retrievals[key] = _retrieve(pipeline, key[0], week_now(day), rank_window)
                summ.pipeline_calls += 1
                while len(retrievals) > retrieval_cap:
                    retrievals.popitem(last=False)
            else:
                retrievals.move_to_end(key)
            return r

        def serve_user(query: str, ts: float, day: int, user_id: str) -> list[dict[str, Any]]:
            # Query-level work (understanding, recall, relevance) is shared for a week as below;
            # ranking and rerank run for this user at this moment, on the videos that exist now.
            r = retrieval(query, day)
            alive = dataclasses.replace(r, candidates=[c for c in r.candidates if videos[c.video_id]["_publish_ts"] <= ts])
            res = pipeline.order(alive, SearchRequest(r.query.normalized, user_id, 1, page, now_ts=ts), reuse=True)
            return [_hit(c) for c in res.hits]

        def serve(query: str, ts: float, day: int) -> list[dict[str, Any]]:
            # The baseline ranker has no per-user state and changes slowly with time
            # (freshness), so results are cached per normalized query for a week and served
            # as of the week's start; the pipeline reads only the normalized text.
            key = (normalize(query), day // 7)
            hits = cache.get(key)
            if hits is None:
                hits = cache[key] = _serve_hits(pipeline, key[0], week_now(day), 3 * page)
                summ.pipeline_calls += 1
            # A video published after this moment did not exist yet.
            return [h for h in hits if videos[h["video_id"]]["_publish_ts"] <= ts][:page]

        def prefetch(queries: list[str], day: int) -> None:
            """Serve the day's first queries through the worker processes in one batch."""
            have = retrievals if stateful else cache
            todo = sorted({normalize(q) for q in queries} - {k[0] for k in have if k[1] == day // 7})
            if pool is None or len(todo) < int(cfg.get("prefetch_min", 32)):
                return
            now = week_now(day)
            if stateful:
                for q, r in zip(todo, pool.map(_worker_retrieve, [(q, now, rank_window) for q in todo], chunksize=8)):
                    docs = pipeline.engine.get_docs([c.video_id for c in r.candidates])
                    for c in r.candidates:
                        c.doc = docs.get(c.video_id)
                    retrievals[(q, day // 7)] = r
                while len(retrievals) > retrieval_cap:
                    retrievals.popitem(last=False)
                summ.pipeline_calls += len(todo)
                return
            for q, hits in zip(todo, pool.map(_worker_serve, [(q, now, 3 * page) for q in todo], chunksize=8)):
                cache[(q, day // 7)] = hits
            summ.pipeline_calls += len(todo)

        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("simulating days", total=days)
            for day in range(days):
                day_start = start + timedelta(days=day)
                events = []
                for u in users:
                    if u.join_day > day or rng.random() >= u.daily_prob:
                        continue
                    for _ in range(max(1, int(round(u.sessions_per_day * rng.uniform(0.5, 1.5))))):
                        events.append((rng.uniform(0, 86400), u))
                events.sort(key=lambda e: e[0])
                qv_today: dict[tuple[str, str], list[int]] = {}
                firsts = []
                for sec, u in events:
                    intent = qgen.intent(u.favourite_artists)
                    clean = clean_text(intent)
                    typed, kind = add_noise(clean, noise, homophones, rng)
                    firsts.append((sec, u, intent, clean, typed, kind))
                prefetch([f[4] for f in firsts], day)
                for sec, u, intent, clean, typed, kind in firsts:
                    sess_seq += 1
                    sid = f"s{sess_seq:08d}"
                    summ.sessions += 1
                    queries_done: list[dict[str, Any]] = []
                    ts = round(_ts(day_start) + sec, 3)     # as logged: serving and replay see the same moment
                    query, noise_kind = typed, kind
                    for qi in range(int(cfg["sessions"]["max_queries"])):
                        hits = serve_user(query, ts, day, u.user_id) if stateful else serve(query, ts, day)
                        outcomes = []
                        rid = f"{sid}-{qi}"
                        summ.requests += 1
                        summ.noisy_queries += 1 if noise_kind else 0
                        intents_seen.setdefault(normalize(clean), {"query": clean, **intent.to_dict()})
                        if noise_kind:
                            noisy_queries.setdefault(query, {"typed": query, "clean": clean, "noise": noise_kind})
                        satisfied = False
                        for pos, h in enumerate(hits, start=1):
                            vid = h["video_id"]
                            v, tr = videos[vid], truth[vid]
                            g = judge.grade(intent, v, tr)
                            pair_grades[(normalize(clean), vid)] = g
                            o = clicks.outcome(pos, g, v, tr, u, ts, brng)
                            snap = {**{k: v for k, v in h.items() if k != "video_id"}, "ranker": ranker,
                                    "t1_video": {"impressions": t1[vid][0], "clicks": t1[vid][1], "valid_plays": t1[vid][2]},
                                    "rt_video": {"impressions": rt[vid][0], "clicks": rt[vid][1], "valid_plays": rt[vid][2]}}
                            rec = {"request_id": rid, "ts": round(ts, 3), "user_id": u.user_id, "query": query, "video_id": vid,
                                   "position": pos, "clicked": o.clicked, "play_time_s": o.play_time_s, "liked": o.liked,
                                   "shared": o.shared, "followed": o.followed, "valid_play": o.valid_play, "session_id": sid,
                                   "split": split_of(day), "features": snap}
                            imp_f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                            outcomes.append({"video_id": vid, "clicked": o.clicked, "valid_play": o.valid_play, "liked": o.liked})
                            rt[vid][0] += 1
                            rt[vid][1] += int(o.clicked)
                            rt[vid][2] += int(o.valid_play)
                            qv = qv_today.setdefault((normalize(query), vid), [0, 0, 0])
                            qv[0] += 1
                            qv[1] += int(o.clicked)
                            qv[2] += int(o.valid_play)
                            summ.impressions += 1
                            summ.clicks += int(o.clicked)
                            summ.valid_plays += int(o.valid_play)
                            pos_imp[pos - 1] += 1
                            pos_clk[pos - 1] += int(o.clicked)
                            grade_imp[g] += 1
                            grade_clk[g] += int(o.clicked)
                            satisfied = satisfied or (o.valid_play and g >= 2)
                        if stateful and outcomes:   # an empty page leaves no impression, so no trace to replay
                            pipeline.observe(u.user_id, ts, outcomes)
                        queries_done.append({"query": query, "request_id": rid, "ts": round(ts, 3), "noise": noise_kind,
                                             "satisfied": satisfied})
                        if satisfied:
                            break
                        # Reformulate the way users do: fix the typo, or add the artist.
                        sc = cfg["sessions"]
                        if noise_kind and brng.random() < float(sc["reformulate_noisy"]):
                            query, noise_kind = clean, ""
                        elif intent.kind == "song" and brng.random() < float(sc["reformulate_song_to_artist_song"]) and intent.song_artists:
                            clean = f"{intent.song_artists[0]} {intent.song}"
                            intent = QueryIntent("artist_song", artist=intent.song_artists[0], song=intent.song,
                                                 song_artists=intent.song_artists, surface_terms=[intent.song_artists[0], intent.song])
                            query, noise_kind = clean, ""
                        else:
                            break
                        summ.reformulations += 1
                        ts = round(ts + brng.uniform(5, 60), 3)
                    ses_f.write(json.dumps({"session_id": sid, "user_id": u.user_id, "day": day, "queries": queries_done},
                                           ensure_ascii=False) + "\n")
                # T+1: today's counters become tomorrow's daily statistics.
                date = day_start.date().isoformat()
                for vid, (i, c, vp) in sorted(rt.items()):
                    vday_f.write(json.dumps({"date": date, "video_id": vid, "impressions": i, "clicks": c, "valid_plays": vp}) + "\n")
                    t1[vid][0] += i; t1[vid][1] += c; t1[vid][2] += vp
                rt.clear()
                for (q, vid), (i, c, vp) in sorted(qv_today.items()):
                    qvday_f.write(json.dumps({"date": date, "query": q, "video_id": vid, "impressions": i, "clicks": c,
                                              "valid_plays": vp}, ensure_ascii=False) + "\n")
                bar.update(task, completed=day + 1)
        for f in (imp_f, ses_f, vday_f, qvday_f):
            f.close()

        summ.ctr_by_position = [c / i if i else 0.0 for c, i in zip(pos_clk, pos_imp)]
        summ.ctr_by_grade = {g: grade_clk[g] / grade_imp[g] for g in sorted(grade_imp)}
        summ.valid_play_rate = summ.valid_plays / max(1, summ.clicks)
        for name in ("train", "validation", "test"):
            ds = [(start + timedelta(days=d)).date().isoformat() for d in range(days) if split_of(d) == name]
            summ.splits[name] = [ds[0], ds[-1]] if ds else []
        # Hidden truth, in its own folder: users' tastes and the grade of every logged pair.
        with open(w.path("truth/users.jsonl"), "w", encoding="utf-8") as f:
            for u in users:
                f.write(json.dumps(u.to_dict(), ensure_ascii=False) + "\n")
        with open(w.path("truth/grades.jsonl"), "w", encoding="utf-8") as f:
            for (q, vid), g in sorted(pair_grades.items()):
                f.write(json.dumps({"query": q, "video_id": vid, "grade": g}, ensure_ascii=False) + "\n")
        with open(w.path("truth/query_noise.jsonl"), "w", encoding="utf-8") as f:
            for q, rec in sorted(noisy_queries.items()):  # what each noisy query should have been
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        with open(w.path("truth/intents.jsonl"), "w", encoding="utf-8") as f:
            for q, it in sorted(intents_seen.items()):
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
        from .judged import write_judged_sets

        write_judged_sets(w, pipeline, judge, intents_seen, videos, truth, cfg, rng)
        summ.seconds = time.time() - t0
        meta = {"catalog": str(Path(catalog).resolve()), "malformed_catalog_lines": report.malformed, "config": cfg,
                "index_version": pipeline.manifest["version_name"], "ranker": summ_ranker(pipeline),
                "split_days": {"train": days - n_val - n_test, "validation": n_val, "test": n_test},
                "summary": {k: v for k, v in summ.__dict__.items()}}
        w.path("summary.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
        w.commit()
    except BaseException:
        w.abort()
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return summ


def _hit(c: Any) -> dict[str, Any]:
    """A shown candidate as the impression log's snapshot holds it (the service's serve log writes the same)."""
    return {"video_id": c.video_id, **impression_snapshot(c, "")}


def _serve_hits(pipeline: SearchPipeline, query: str, now_ts: float, size: int) -> list[dict[str, Any]]:
    res = pipeline.search(SearchRequest(query, None, 1, size, now_ts=now_ts))
    return [_hit(c) for c in res.hits]


def _retrieve(pipeline: SearchPipeline, query: str, now_ts: float, window: int) -> Retrieval:
    """The query-level half, kept small: the top `window` candidates by relevance, without the
    per-stage explain (the simulator never shows it)."""
    r = pipeline.retrieve(SearchRequest(query, None, 1, 10, now_ts=now_ts))
    top = sorted(r.candidates, key=lambda c: -c.relevance_score)[:window] if len(r.candidates) > window else r.candidates
    for c in top:
        c.explain = {}
    return dataclasses.replace(r, candidates=top, stages={})


_WORKER_PIPELINE: SearchPipeline | None = None


def _worker_init(config: dict[str, Any]) -> None:
    global _WORKER_PIPELINE
    _WORKER_PIPELINE = SearchPipeline(config)


def _worker_serve(args: tuple[str, float, int]) -> list[dict[str, Any]]:
    assert _WORKER_PIPELINE is not None
    return _serve_hits(_WORKER_PIPELINE, *args)


def _worker_retrieve(args: tuple[str, float, int]) -> Retrieval:
    assert _WORKER_PIPELINE is not None
    r = _retrieve(_WORKER_PIPELINE, *args)
    for c in r.candidates:      # the main process has the same doc store: do not pickle records
        c.doc = None
    return r


def summ_ranker(pipeline: SearchPipeline) -> str:
    st = pipeline.stages.get("ranking")
    return getattr(st, "name", "none") if st else "none"
