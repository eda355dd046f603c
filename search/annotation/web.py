"""The annotation web app, mounted on the search API under /annotate.

Pages (server-rendered with Jinja2, autoescape on: catalog text is never interpreted as
HTML) and a little vanilla JS for the keyboard:

    GET  /annotate/login                    log in
    GET  /annotate[?batch=ID]               my next task (grading page)
    GET  /annotate/tasks/{id}               one of my tasks (another annotator's: 403)
    GET  /annotate/admin                    batches, new batch (incl. JSONL uploads), users
    GET  /annotate/admin/batches/{id}       progress, agreement, gold accuracy, adjudication, export
    GET  /annotate/admin/audit              who changed what, when

JSON endpoints (CSRF token in the `X-CSRF-Token` header):

    POST /annotate/api/tasks/{id}/label     {grade | skip, aspects, note, idempotency_key, expected_label_id}
    POST /annotate/api/undo                 {batch_id, idempotency_key}
    GET  /annotate/api/next, /annotate/api/tasks/{id}, /annotate/api/me, /annotate/api/admin/batches/{id}/stats

Sessions live in the database (only a hash of the token is stored); the cookie carries the
token signed with HMAC-SHA256 (key: `[annotation] secret`, `MVSEARCH_ANNOTATION_SECRET`, or
one generated and kept in the DB), HttpOnly, SameSite=Lax, path /annotate, Secure when
`cookie_secure = true`. Every state-changing request needs the session's CSRF token (form
field or header) and, when the browser sends one, a same-origin Origin header. The login
form has its own double-submit token.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from .export import METHODS, queries_of, to_jsonl
from .grades import ASPECTS, GRADE_NAMES, GRADES
from .sampling import STRATEGIES, read_queries
from .service import DEFAULTS, AnnotationService, BatchRequest, fmt_kappa
from .store import AnnotationError, AnnotationStore, Session, User

PKG = Path(__file__).parent
TEMPLATES = PKG / "templates"
STATIC = PKG / "static"
SESSION_COOKIE = "mvs_ann_session"
LOGIN_COOKIE = "mvs_ann_login"
COOKIE_PATH = "/annotate"

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class AnnError(Exception):
    """An error answered as a page (browser) or JSON (API)."""

    def __init__(self, status: int, message: str, *, json_api: bool = False, redirect: str | None = None,
                 detail: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.message, self.json_api, self.redirect, self.detail = status, message, json_api, redirect, detail or {}


MAX_ID = 2 ** 53  # ids beyond this are not ours (and would overflow SQLite's INTEGER): a 400, never a 500
TaskId = PathParam(..., ge=1, le=MAX_ID)
BatchId = PathParam(..., ge=1, le=MAX_ID)
BatchQuery = Query(None, ge=1, le=MAX_ID)


class LabelIn(BaseModel):
    grade: int | None = Field(None, ge=0, le=3)
    skip: bool = False
    aspects: dict[str, bool | None] = Field(default_factory=dict)
    note: str = Field("", max_length=2000)
    idempotency_key: str = Field(..., min_length=1, max_length=128)
    expected_label_id: int | None = Field(None, ge=1, le=MAX_ID)


class UndoIn(BaseModel):
    batch_id: int = Field(..., ge=1, le=MAX_ID)
    idempotency_key: str = Field(..., min_length=1, max_length=128)


def _jinja_env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["kappa"] = fmt_kappa
    env.filters["pct"] = lambda x: "—" if x is None else f"{100 * float(x):.0f}%"
    env.filters["duration"] = _duration
    env.filters["when"] = lambda s: (s or "")[:19].replace("T", " ")
    env.filters["num"] = lambda x: "—" if x in (None, "") else f"{int(x):,}"
    return env


VIDEO_DEFAULTS: dict[str, Any] = {"title": "", "description": "", "tags": [], "artists": [], "songs": [], "uploader": "",
                                  "category": "", "language": "", "duration_s": None, "publish_time": "", "play_count": None}


def display_video(v: dict[str, Any] | None) -> dict[str, Any]:
    """A video snapshot with every field the pages show (older or uploaded snapshots may
    lack some); list fields are lists of strings, everything else as stored."""
    out = {**VIDEO_DEFAULTS, **(v or {})}
    for k in ("tags", "artists", "songs"):
        val = out.get(k)
        out[k] = [str(x) for x in val] if isinstance(val, list) else ([] if val in (None, "") else [str(val)])
    for k in ("title", "description", "uploader", "category", "language", "publish_time"):
        out[k] = "" if out.get(k) is None else str(out[k])
    return out


def _duration(s: Any) -> str:
    try:
        s = int(round(float(s)))
    except (TypeError, ValueError):
        return "—"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class AnnotationApp:
    """State of the mounted tool: config, the (lazily opened) store and the service."""

    def __init__(self, pipeline: Any, config: dict[str, Any]):
        self.pipeline = pipeline
        self.config = {**DEFAULTS, **config}
        self._store: AnnotationStore | None = None
        self._service: AnnotationService | None = None
        self._lock = threading.Lock()
        self._secret: bytes | None = None
        self.env = _jinja_env()

    @property
    def store(self) -> AnnotationStore:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = AnnotationStore(self.config["db_path"])
        return self._store

    @property
    def service(self) -> AnnotationService:
        if self._service is None:
            self._service = AnnotationService(self.store, self.pipeline, self.config)
        return self._service

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            s = str(self.config.get("secret") or os.environ.get("MVSEARCH_ANNOTATION_SECRET", ""))
            self._secret = s.encode("utf-8") if s else self.store.secret()
        return self._secret

    def sign(self, token: str) -> str:
        return token + "." + hmac.new(self.secret, token.encode("ascii"), hashlib.sha256).hexdigest()

    def unsign(self, value: str | None) -> str | None:
        if not value or "." not in value:
            return None
        token, sig = value.rsplit(".", 1)
        want = hmac.new(self.secret, token.encode("ascii", "ignore"), hashlib.sha256).hexdigest()
        return token if _same(sig, want) else None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def render(self, template: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(grades=GRADES, grade_names=GRADE_NAMES, aspects=ASPECTS, **ctx)
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=SECURITY_HEADERS)


def _same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two secrets (any characters: no TypeError on non-ASCII input)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode("utf-8", "replace"), str(b).encode("utf-8", "replace"))


def _safe_next(url: str | None) -> str:
    """Only local /annotate paths are followed after login (no open redirect)."""
    if url and url.startswith("/annotate") and not url.startswith("//") and "\\" not in url and not urlsplit(url).netloc:
        return url
    return "/annotate"


def mount_annotation(app: FastAPI, pipeline: Any, db_path: str | Path | None = None,
                     config: dict[str, Any] | None = None) -> AnnotationApp:
    """Mount the annotation tool on `app` under /annotate. The database is opened on the
    first request, so creating the app touches no file."""
    cfg = dict(config if config is not None else (getattr(pipeline, "config", {}) or {}).get("annotation", {}))
    if db_path:
        cfg["db_path"] = str(db_path)
    st = AnnotationApp(pipeline, cfg)
    app.state.annotation = st

    @app.exception_handler(AnnError)
    async def _ann_error(request: Request, exc: AnnError) -> Response:
        if exc.redirect:
            return RedirectResponse(exc.redirect, status_code=303)
        if exc.json_api:
            return _json({"error": exc.message, "detail": exc.detail}, exc.status)
        sess = getattr(request.state, "ann_session", None)
        return st.render("error.html", exc.status, status=exc.status, message=exc.message, session=sess,
                         user=sess.user if sess else None, csrf=sess.csrf_token if sess else "")

    app.include_router(build_router(st))
    return st


def build_router(st: AnnotationApp) -> APIRouter:
    r = APIRouter(prefix="/annotate", include_in_schema=True, tags=["annotation"])

    # --- auth helpers ------------------------------------------------------------------------------

    def session_of(request: Request) -> Session | None:
        token = st.unsign(request.cookies.get(SESSION_COOKIE))
        sess = st.store.get_session(token) if token else None
        request.state.ann_session = sess
        return sess

    def page_user(request: Request) -> Session:
        sess = session_of(request)
        if sess is None:
            nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise AnnError(401, "login required", redirect=f"/annotate/login?next={quote(nxt, safe='')}")
        return sess

    def page_admin(sess: Session = Depends(page_user)) -> Session:
        if not sess.user.is_admin:
            raise AnnError(403, "This page is for admins. Your account is an annotator account.")
        return sess

    def api_user(request: Request) -> Session:
        sess = session_of(request)
        if sess is None:
            raise AnnError(401, "login required", json_api=True)
        return sess

    def api_admin(sess: Session = Depends(api_user)) -> Session:
        if not sess.user.is_admin:
            raise AnnError(403, "admins only", json_api=True)
        return sess

    def check_origin(request: Request, json_api: bool) -> None:
        origin = request.headers.get("origin")
        if origin and origin != "null":
            host = request.headers.get("host", "")
            if urlsplit(origin).netloc != host:
                raise AnnError(403, "cross-origin request refused", json_api=json_api)

    def api_csrf(request: Request, sess: Session = Depends(api_user)) -> Session:
        check_origin(request, True)
        sent = request.headers.get("x-csrf-token", "")
        if not _same(sent, sess.csrf_token):
            raise AnnError(403, "missing or wrong CSRF token (X-CSRF-Token header)", json_api=True)
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise AnnError(415, "send JSON (Content-Type: application/json)", json_api=True)
        return sess

    def form_csrf(request: Request, sess: Session, token: str) -> None:
        check_origin(request, False)
        if not _same(token, sess.csrf_token):
            raise AnnError(403, "Missing or wrong CSRF token: reload the page and try again.")

    def ann_err(e: AnnotationError, json_api: bool) -> AnnError:
        return AnnError(e.status, str(e), json_api=json_api, detail=getattr(e, "detail", None))

    def set_session_cookie(resp: Response, token: str) -> None:
        resp.set_cookie(SESSION_COOKIE, st.sign(token), max_age=int(float(st.config["session_hours"]) * 3600), path=COOKIE_PATH,
                        httponly=True, samesite="lax", secure=bool(st.config["cookie_secure"]))

    # --- static files (an allow-list: the package's own CSS and JS) ----------------------------------

    @r.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        types = {"annotate.css": "text/css; charset=utf-8", "annotate.js": "text/javascript; charset=utf-8"}
        if name not in types:
            raise AnnError(404, "not found", json_api=True)
        return Response((STATIC / name).read_bytes(), media_type=types[name],
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    # --- login ---------------------------------------------------------------------------------------

    @r.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/annotate", error: str = "") -> Response:
        if session_of(request) is not None:
            return RedirectResponse(_safe_next(next), status_code=303)
        tok = secrets.token_urlsafe(24)
        resp = st.render("login.html", 401 if error else 200, login_token=tok, next=_safe_next(next), error=error, user=None,
                         session=None, csrf="")
        resp.set_cookie(LOGIN_COOKIE, tok, max_age=3600, path=COOKIE_PATH, httponly=True, samesite="strict",
                        secure=bool(st.config["cookie_secure"]))
        return resp

    @r.post("/login", include_in_schema=False)
    def login(request: Request, username: str = Form(""), password: str = Form(""), login_token: str = Form(""),
              next: str = Form("/annotate")) -> Response:
        check_origin(request, False)
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not _same(cookie, login_token):
            raise AnnError(403, "The login form expired or was not sent from this site: reload the login page.")
        try:
            user = st.service.login(username, password, ip=request.client.host if request.client else "")
        except AnnotationError as e:
            tok = secrets.token_urlsafe(24)
            resp = st.render("login.html", e.status if e.status == 429 else 401, login_token=tok, next=_safe_next(next),
                             error=str(e), user=None, session=None, csrf="", username=username[:64])
            resp.set_cookie(LOGIN_COOKIE, tok, max_age=3600, path=COOKIE_PATH, httponly=True, samesite="strict",
                            secure=bool(st.config["cookie_secure"]))
            return resp
        token, _ = st.store.create_session(user, float(st.config["session_hours"]))
        dest = _safe_next(next)
        if dest == "/annotate" and user.is_admin and not st.store.batches_for_user(user.id):
            dest = "/annotate/admin"
        resp = RedirectResponse(dest, status_code=303)
        set_session_cookie(resp, token)
        resp.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
        return resp

    @r.post("/logout", include_in_schema=False)
    def logout(request: Request, csrf_token: str = Form(""), sess: Session = Depends(page_user)) -> Response:
        form_csrf(request, sess, csrf_token)
        token = st.unsign(request.cookies.get(SESSION_COOKIE))
        if token:
            st.store.delete_session(token)
        resp = RedirectResponse("/annotate/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return resp

    # --- grading pages -------------------------------------------------------------------------------

    def task_page(sess: Session, task: Any, *, undone: bool = False) -> HTMLResponse:
        user = sess.user
        progress = st.store.progress(user, task.batch_id) if task.user_id == user.id else None
        return st.render("task.html", session=sess, user=user, csrf=sess.csrf_token, task=task, video=display_video(task.video),
                         progress=progress,
                         batches=st.store.batches_for_user(user.id), readonly=task.user_id != user.id,
                         idem_key=secrets.token_urlsafe(16), undo_key=secrets.token_urlsafe(16), undone=undone,
                         recent=st.store.recent_labels(user, task.batch_id, 5) if task.user_id == user.id else [])

    @r.get("", response_class=HTMLResponse, include_in_schema=False)
    def next_page(batch: int | None = BatchQuery, sess: Session = Depends(page_user)) -> Response:
        user = sess.user
        task = st.store.next_task(user, batch)
        if task is None:
            batches = st.store.batches_for_user(user.id)
            cur = next((b for b in batches if b["id"] == batch), None) if batch is not None else None
            return st.render("done.html", session=sess, user=user, csrf=sess.csrf_token, batches=batches, batch=cur,
                             undo_key=secrets.token_urlsafe(16))
        return task_page(sess, task)

    @r.get("/tasks/{task_id}", response_class=HTMLResponse, include_in_schema=False)
    def task_by_id(task_id: int = TaskId, undone: int = 0, sess: Session = Depends(page_user)) -> Response:
        try:
            task = st.store.get_task(task_id, sess.user)
        except AnnotationError as e:
            raise ann_err(e, False) from None
        return task_page(sess, task, undone=bool(undone))

    # --- JSON API ------------------------------------------------------------------------------------

    def task_json(task: Any, user: User) -> dict[str, Any]:
        d = {"task_id": task.id, "batch_id": task.batch_id, "batch": task.batch_name, "status": task.status, "qid": task.qid,
             "query": task.query, "video_id": task.video_id, "video": task.video, "current_label": task.current_label}
        if user.is_admin:  # gold status is hidden from annotators
            d["is_gold"] = task.is_gold
            d["stratum"] = task.stratum
        return d

    @r.get("/api/me")
    def api_me(sess: Session = Depends(api_user)) -> JSONResponse:
        u = sess.user
        return _json({"user": u.name, "role": u.role, "batches": st.store.batches_for_user(u.id)})

    @r.get("/api/next")
    def api_next(batch: int | None = BatchQuery, sess: Session = Depends(api_user)) -> JSONResponse:
        task = st.store.next_task(sess.user, batch)
        if task is None:
            return _json({"task": None})
        return _json({"task": task_json(task, sess.user), "progress": st.store.progress(sess.user, task.batch_id)})

    @r.get("/api/tasks/{task_id}")
    def api_task(task_id: int = TaskId, sess: Session = Depends(api_user)) -> JSONResponse:
        try:
            task = st.store.get_task(task_id, sess.user)
        except AnnotationError as e:
            raise ann_err(e, True) from None
        return _json({"task": task_json(task, sess.user)})

    @r.post("/api/tasks/{task_id}/label")
    def api_label(body: LabelIn, task_id: int = TaskId, sess: Session = Depends(api_csrf)) -> JSONResponse:
        if not body.skip and body.grade is None:
            raise AnnError(400, "grade (0–3) or skip is required", json_api=True)
        try:
            res = st.store.submit_label(sess.user, task_id, body.grade, idempotency_key=body.idempotency_key, aspects=body.aspects,
                                        note=body.note, skip=body.skip, expected_label_id=body.expected_label_id)
            task = st.store.get_task(task_id, sess.user)
        except AnnotationError as e:
            raise ann_err(e, True) from None
        return _json({"label_id": res.label_id, "task_id": task_id, "action": res.action, "replayed": res.replayed,
                      "progress": st.store.progress(sess.user, task.batch_id), "next_url": f"/annotate?batch={task.batch_id}"},
                     200 if res.replayed else 201)

    @r.post("/api/undo")
    def api_undo(body: UndoIn, sess: Session = Depends(api_csrf)) -> JSONResponse:
        try:
            res = st.store.undo(sess.user, body.batch_id, idempotency_key=body.idempotency_key)
        except AnnotationError as e:
            raise ann_err(e, True) from None
        return _json({"undo_id": res.undo_id, "task_id": res.task_id, "undone_label_id": res.undone_label_id,
                      "replayed": res.replayed, "url": f"/annotate/tasks/{res.task_id}?undone=1"})

    @r.get("/api/admin/batches/{batch_id}/stats")
    def api_stats(batch_id: int = BatchId, sess: Session = Depends(api_admin)) -> JSONResponse:
        if st.store.get_batch(batch_id) is None:
            raise AnnError(404, f"no batch {batch_id}", json_api=True)
        return _json(st.service.stats(batch_id))

    # --- admin pages ---------------------------------------------------------------------------------

    def admin_page(sess: Session, status: int = 200, error: str = "", msg: str = "", form: dict[str, Any] | None = None) -> HTMLResponse:
        return st.render("admin.html", status, session=sess, user=sess.user, csrf=sess.csrf_token, batches=st.store.list_batches(),
                         users=st.store.list_users(), strategies=STRATEGIES, error=error, msg=msg, form=form or {},
                         defaults=st.config, has_index=st.pipeline is not None)

    @r.get("/admin", response_class=HTMLResponse, include_in_schema=False)
    def admin(msg: str = "", sess: Session = Depends(page_admin)) -> Response:
        return admin_page(sess, msg=msg[:300])

    def _upload(f: UploadFile | None, what: str) -> bytes | None:
        if f is None or not f.filename:
            return None
        limit = int(float(st.config["max_upload_mb"]) * 1024 * 1024)
        data = f.file.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"{what} is larger than {st.config['max_upload_mb']} MB")
        return data or None

    @r.post("/admin/batches", include_in_schema=False)
    def admin_create_batch(request: Request, csrf_token: str = Form(""), name: str = Form(""), strategy: str = Form("search"),
                           queries: str = Form(""), sample_queries: str = Form(""), top_k: str = Form(""), size: str = Form(""),
                           gold_rate: str = Form(""), per_pair: str = Form(""), seed: str = Form("0"),
                           annotators: list[str] = Form([]), pairs_file: UploadFile | None = File(None),
                           logs_file: UploadFile | None = File(None), gold_file: UploadFile | None = File(None),
                           sess: Session = Depends(page_admin)) -> Response:
        form_csrf(request, sess, csrf_token)
        form = {"name": name, "strategy": strategy, "queries": queries, "sample_queries": sample_queries, "top_k": top_k,
                "size": size, "gold_rate": gold_rate, "per_pair": per_pair, "seed": seed, "annotators": annotators}
        try:
            def num(s: str, default: Any, cast: Any = int) -> Any:
                s = (s or "").strip()
                return cast(s) if s else default

            req = BatchRequest(
                name=name.strip(), strategy=strategy, queries=read_queries(queries.encode("utf-8")) or None,
                sample_queries=num(sample_queries, None), pairs=_upload(pairs_file, "the pairs file"),
                logs=_upload(logs_file, "the log file"), gold=_upload(gold_file, "the gold file"),
                gold_rate=num(gold_rate, float(st.config["gold_rate"]), float), annotators=annotators or None,
                per_pair=num(per_pair, int(st.config["annotators_per_pair"])), top_k=num(top_k, int(st.config["top_k"])),
                size=num(size, None), seed=num(seed, 0))
            if req.strategy == "upload" and req.pairs is None:
                raise ValueError("the upload strategy needs a pairs JSONL file")
            if not req.name:
                raise ValueError("give the batch a name")
            res = st.service.create_batch(req, actor=sess.user)
        except (ValueError, AnnotationError) as e:
            return admin_page(sess, getattr(e, "status", 400), error=str(e), form=form)
        return RedirectResponse(f"/annotate/admin/batches/{res.batch.id}?msg={quote(res.summary()[:300])}", status_code=303)

    @r.get("/admin/batches/{batch_id}", response_class=HTMLResponse, include_in_schema=False)
    def admin_batch(batch_id: int = BatchId, msg: str = "", error: str = "", sess: Session = Depends(page_admin)) -> Response:
        b = st.store.get_batch(batch_id)
        if b is None:
            raise AnnError(404, f"No batch {batch_id}.")
        summary = next(x for x in st.store.list_batches() if x["batch"].id == batch_id)
        return st.render("batch.html", session=sess, user=sess.user, csrf=sess.csrf_token, b=b, summary=summary,
                         stats=st.service.stats(batch_id),
                         disagreements=[{**d, "video": display_video(d["video"]) if d["video"] else None}
                                        for d in st.service.disagreements(batch_id)], msg=msg[:300],
                         error=error[:300], methods=METHODS, users=[u for u in st.store.list_users() if u.active],
                         params_json=json.dumps(b.params, ensure_ascii=False))

    @r.post("/admin/batches/{batch_id}/status", include_in_schema=False)
    def admin_batch_status(request: Request, batch_id: int = BatchId, csrf_token: str = Form(""), status: str = Form(""),
                           sess: Session = Depends(page_admin)) -> Response:
        form_csrf(request, sess, csrf_token)
        try:
            st.store.set_batch_status(batch_id, status, actor=sess.user)
        except AnnotationError as e:
            raise ann_err(e, False) from None
        return RedirectResponse(f"/annotate/admin/batches/{batch_id}?msg=batch+{'reopened' if status == 'open' else 'closed'}",
                                status_code=303)

    @r.post("/admin/batches/{batch_id}/assign", include_in_schema=False)
    def admin_assign(request: Request, batch_id: int = BatchId, csrf_token: str = Form(""), annotators: list[str] = Form([]),
                     per_pair: str = Form(""), sess: Session = Depends(page_admin)) -> Response:
        form_csrf(request, sess, csrf_token)
        try:
            users = st.service._annotators(annotators or None)
            n = st.store.assign(batch_id, users, int(per_pair) if per_pair.strip() else None, actor=sess.user)
        except (ValueError, AnnotationError) as e:
            return RedirectResponse(f"/annotate/admin/batches/{batch_id}?error={quote(str(e)[:200])}", status_code=303)
        return RedirectResponse(f"/annotate/admin/batches/{batch_id}?msg={n}+tasks+added", status_code=303)

    @r.post("/admin/pairs/{pair_id}/adjudicate", include_in_schema=False)
    def admin_adjudicate(request: Request, pair_id: int = PathParam(..., ge=1, le=MAX_ID), csrf_token: str = Form(""),
                         grade: str = Form(""), note: str = Form(""), batch_id: int = Form(..., ge=1, le=MAX_ID),
                         sess: Session = Depends(page_admin)) -> Response:
        form_csrf(request, sess, csrf_token)
        try:
            st.store.adjudicate(pair_id, int(grade) if grade.strip().isdigit() else -1, sess.user, note)
        except AnnotationError as e:
            return RedirectResponse(f"/annotate/admin/batches/{batch_id}?error={quote(str(e)[:200])}#adjudication", status_code=303)
        return RedirectResponse(f"/annotate/admin/batches/{batch_id}?msg=adjudicated#adjudication", status_code=303)

    @r.get("/admin/batches/{batch_id}/export", include_in_schema=False)
    def admin_export(batch_id: int = BatchId, method: str = "majority", include_gold: int = 0, what: str = "qrels",
                     sess: Session = Depends(page_admin)) -> Response:
        b = st.store.get_batch(batch_id)
        if b is None:
            raise AnnError(404, f"No batch {batch_id}.")
        if method not in METHODS:
            raise AnnError(400, f"method must be one of {', '.join(METHODS)}")
        rows, _ = st.service.export(batch_id, method, bool(include_gold), actor=sess.user)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", b.name).strip("_") or f"batch{batch_id}"
        if what == "queries":
            body, fname = to_jsonl(queries_of(rows)), f"{safe}.queries.jsonl"
        else:
            body, fname = to_jsonl(rows), f"{safe}.{method}.qrels.jsonl"
        return Response(body.encode("utf-8"), media_type="application/x-ndjson; charset=utf-8",
                        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{fname}"'})

    @r.get("/admin/batches/{batch_id}/labels.jsonl", include_in_schema=False)
    def admin_label_history(batch_id: int = BatchId, sess: Session = Depends(page_admin)) -> Response:
        if st.store.get_batch(batch_id) is None:
            raise AnnError(404, f"No batch {batch_id}.")
        rows = st.store.labels_for_batch(batch_id, current_only=False)
        return Response(to_jsonl(rows).encode("utf-8"), media_type="application/x-ndjson; charset=utf-8",
                        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="batch{batch_id}.labels.jsonl"'})

    @r.post("/admin/users", include_in_schema=False)
    def admin_add_user(request: Request, csrf_token: str = Form(""), name: str = Form(""), role: str = Form("annotator"),
                       password: str = Form(""), sess: Session = Depends(page_admin)) -> Response:
        form_csrf(request, sess, csrf_token)
        try:
            st.store.create_user(name, password, role, actor=sess.user)
        except AnnotationError as e:
            return admin_page(sess, e.status, error=str(e), form={"user_name": name, "user_role": role})
        return RedirectResponse(f"/annotate/admin?msg={quote(f'user {name} added')}#users", status_code=303)

    @r.post("/admin/users/{name}/active", include_in_schema=False)
    def admin_user_active(request: Request, name: str, csrf_token: str = Form(""), active: str = Form("1"),
                          sess: Session = Depends(page_admin)) -> Response:
        form_csrf(request, sess, csrf_token)
        if name == sess.user.name and active != "1":
            return admin_page(sess, 400, error="you cannot deactivate your own account")
        try:
            st.store.set_active(name, active == "1", actor=sess.user)
        except AnnotationError as e:
            return admin_page(sess, e.status, error=str(e))
        return RedirectResponse(f"/annotate/admin?msg={quote(f'user {name} updated')}#users", status_code=303)

    @r.post("/admin/users/{name}/password", include_in_schema=False)
    def admin_user_password(request: Request, name: str, csrf_token: str = Form(""), password: str = Form(""),
                            sess: Session = Depends(page_admin)) -> Response:
        form_csrf(request, sess, csrf_token)
        try:
            st.store.set_password(name, password, actor=sess.user)
        except AnnotationError as e:
            return admin_page(sess, e.status, error=str(e))
        return RedirectResponse(f"/annotate/admin?msg={quote(f'password of {name} changed; their sessions ended')}#users",
                                status_code=303)

    @r.get("/admin/audit", response_class=HTMLResponse, include_in_schema=False)
    def admin_audit(batch: int | None = BatchQuery, sess: Session = Depends(page_admin)) -> Response:
        rows = st.store.audit_log(500, batch_id=batch)
        return st.render("audit.html", session=sess, user=sess.user, csrf=sess.csrf_token, rows=rows, batch=batch,
                         dumps=lambda d: json.dumps(d, ensure_ascii=False, sort_keys=True))

    return r
