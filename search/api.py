"""HTTP API (FastAPI). Typed pydantic responses, so the OpenAPI schema documents itself.

Bad input never yields a 500: empty or over-long queries, bad paging → 4xx with a message;
control characters, emoji and query-syntax characters are normalized away (user text is
never passed to a query parser); an unreachable engine → 503 with the reason.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from .engines.base import EngineUnavailable
from .pipeline import SearchPipeline, SearchRequest
from .serve_log import ServeLog, is_valid_play

log = logging.getLogger("mvsearch.api")

MAX_Q_CHARS = 10_000


class Token(BaseModel):
    text: str
    weight: float
    entity_type: str | None = None


class EntityInfo(BaseModel):
    text: str
    type: str = Field(description="artist | song | album | show | lyric | version | language | style | mood")
    token_start: int
    token_end: int = Field(description="exclusive")
    char_start: int = Field(description="offset in `normalized`")
    char_end: int = Field(description="exclusive")
    source: str = Field(description="dictionary | tagger | both")
    score: float


class QueryInfo(BaseModel):
    raw: str
    normalized: str
    tokens: list[Token]
    entities: list[EntityInfo] = Field(default_factory=list)
    intents: dict[str, float] = Field(default_factory=dict)
    corrections: list[dict[str, Any]] = Field(default_factory=list)
    rewrites: list[str] = Field(default_factory=list)


class VideoHit(BaseModel):
    rank: int
    video_id: str
    title: str
    artists: list[str]
    songs: list[str]
    uploader: str
    category: str
    language: str
    duration_s: float
    publish_time: str
    play_count: int
    score: float = Field(description="final score of the last ranking stage")
    relevance_score: float
    relevance_grade: int | None = Field(None, description="predicted grade: 3 good, 2 fair-good, 1 fair-fair, 0 bad")
    sources: list[str] = Field(description="recall routes that found this video")
    explain: dict[str, Any] | None = Field(None, description="per-stage contributions, with explain=true")


class SearchResponse(BaseModel):
    request_id: str = Field(description="quote it in POST /events when the user clicks or plays a result")
    query: QueryInfo
    total: int
    page: int
    size: int
    results: list[VideoHit]
    warnings: list[str]
    took_ms: float
    index_version: str
    engine: str
    stages: dict[str, Any] | None = None


class Outcome(BaseModel):
    video_id: str = Field(max_length=128)
    clicked: bool = False
    play_time_s: float = Field(0.0, ge=0, le=86400)
    liked: bool = False
    shared: bool = False
    followed: bool = False


class EventsRequest(BaseModel):
    request_id: str = Field(max_length=64, description="the request_id of the /search response the user acted on")
    user_id: str | None = Field(None, max_length=128)
    ts: float | None = Field(None, description="when it happened (epoch seconds); default: now")
    outcomes: list[Outcome] = Field(min_length=1, max_length=100)


class EventsResponse(BaseModel):
    accepted: int
    logged: bool = Field(description="written to the serve log's events.jsonl ([search] serve_log)")
    stages_updated: int = Field(description="ranking stages whose real-time counters / user history took the events")


class Video(BaseModel):
    model_config = {"extra": "allow"}
    video_id: str
    title: str


class Health(BaseModel):
    status: str
    engine: dict[str, Any]


def create_app(pipeline: SearchPipeline) -> FastAPI:
    app = FastAPI(title="mvsearch", version="0.1.0",
                  description="Music-video search: query understanding → recall → relevance → ranking → rerank.")
    app.state.pipeline = pipeline
    log_dir = pipeline.config.get("search", {}).get("serve_log") or ""
    serve_log = ServeLog(log_dir) if log_dir else None
    app.state.serve_log = serve_log

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        msgs = [f"{'.'.join(str(x) for x in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(status_code=400, content={"error": "invalid request", "detail": msgs})

    @app.exception_handler(EngineUnavailable)
    async def _unavailable(request: Request, exc: EngineUnavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"error": "search engine unavailable", "detail": str(exc)})

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/search", response_model=SearchResponse, response_model_exclude_none=True)
    def search(
        q: str = Query(..., description="what the user typed", max_length=MAX_Q_CHARS),
        user_id: str | None = Query(None, max_length=128),
        page: int = Query(1, ge=1, le=1000),
        size: int = Query(10, ge=1, le=100),
        explain: bool = Query(False, description="include each stage's contribution per result"),
    ) -> SearchResponse:
        cfg = pipeline.config.get("search", {})
        if not q.strip():
            raise HTTPException(400, "q must not be empty")
        if size > int(cfg.get("max_page_size", 50)):
            raise HTTPException(400, f"size must be at most {cfg.get('max_page_size', 50)}")
        if page * size > int(cfg.get("max_results", 1000)):
            raise HTTPException(400, f"page*size must be at most {cfg.get('max_results', 1000)}; refine the query instead of paging deeper")
        req = SearchRequest(q, user_id, page, size, explain)
        res = pipeline.search(req)
        request_id = uuid.uuid4().hex
        if serve_log is not None and res.hits:
            ranking = pipeline.stages.get("ranking")
            serve_log.served(request_id, pipeline.now(req), user_id, res.query.normalized, res.hits, (page - 1) * size + 1,
                             getattr(ranking, "name", "none"))
        return to_response(res, explain, request_id)

    @app.post("/events", response_model=EventsResponse)
    def events(body: EventsRequest) -> EventsResponse:
        """What the user did with a served page. The valid-play flag is derived here (SPEC:
        play time ≥ min(30 s, half the video)); the ranker's real-time counters and the user's
        history take the events at once, and the serve log keeps them for training."""
        ts = body.ts if body.ts is not None else time.time()
        docs = pipeline.engine.get_docs([o.video_id for o in body.outcomes])
        missing = sorted({o.video_id for o in body.outcomes} - set(docs))
        if missing:
            raise HTTPException(404, f"unknown video_id(s): {missing[:5]}")
        outs = [{**o.model_dump(), "valid_play": o.clicked and is_valid_play(o.play_time_s, float(docs[o.video_id].get("duration_s") or 0))}
                for o in body.outcomes]
        if serve_log is not None:
            serve_log.events(body.request_id, body.user_id, ts, outs)
        n = pipeline.observe(body.user_id, ts, outs)
        return EventsResponse(accepted=len(outs), logged=serve_log is not None, stages_updated=n)

    @app.get("/videos/{video_id}", response_model=Video)
    def video(video_id: str) -> Video:
        if len(video_id) > 128:
            raise HTTPException(400, "video_id too long")
        docs = pipeline.engine.get_docs([video_id])
        if video_id not in docs:
            raise HTTPException(404, f"video {video_id!r} not found")
        d = dict(docs[video_id])
        d.pop("_fields", None)
        return Video(**d)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        h = pipeline.health()
        return Health(status="ok" if h.get("reachable") else "degraded", engine=h)

    ann = pipeline.config.get("annotation", {})
    if ann.get("enabled", True):  # the relevance annotation tool under /annotate (DB opened on first use)
        from .annotation.web import mount_annotation

        mount_annotation(app, pipeline, ann.get("db_path", "var/annotation.sqlite"), ann)

    return app


def to_response(res, explain: bool, request_id: str = "") -> SearchResponse:
    q = res.query
    hits = []
    for i, c in enumerate(res.hits):
        d = c.doc or {}
        hits.append(VideoHit(
            rank=(res.page - 1) * res.size + i + 1, video_id=c.video_id, title=d.get("title", ""), artists=d.get("artists", []),
            songs=d.get("songs", []), uploader=d.get("uploader", ""), category=d.get("category", "other"),
            language=d.get("language", "other"), duration_s=float(d.get("duration_s", 0)), publish_time=str(d.get("publish_time", "")),
            play_count=int(d.get("play_count", 0)), score=c.rank_score, relevance_score=c.relevance_score, relevance_grade=c.grade,
            sources=sorted(c.sources), explain=c.explain if explain else None))
    return SearchResponse(
        request_id=request_id or uuid.uuid4().hex,
        query=QueryInfo(raw=q.raw, normalized=q.normalized, tokens=[Token(text=t.text, weight=t.weight, entity_type=t.entity_type) for t in q.tokens],
                        entities=[EntityInfo(**e.__dict__) for e in q.entities], intents=q.intents,
                        corrections=[c.__dict__ for c in q.corrections], rewrites=q.rewrites),
        total=res.total, page=res.page, size=res.size, results=hits, warnings=res.warnings, took_ms=res.took_ms,
        index_version=res.index_version, engine=res.engine, stages=res.stages if explain else None)
