"""Storage layer of the annotation tool.

One class, explicit methods, no ORM. SQLite (WAL mode, foreign keys, busy timeout) is the
default; the SQL is kept portable so that PostgreSQL can replace it:

- only the connection setup (`_connect`: PRAGMAs) and the write-transaction start
  (`_begin`: `BEGIN IMMEDIATE`, i.e. take the write lock up front) are SQLite-specific;
- the DDL uses standard types; `INTEGER PRIMARY KEY` becomes `BIGINT GENERATED ALWAYS AS
  IDENTITY PRIMARY KEY` on PostgreSQL (see `SCHEMA`);
- the DML is plain SQL with `?` placeholders (`%s` for psycopg), `INSERT … RETURNING id`,
  and partial unique indexes (`WHERE is_current = 1`), which both engines support.

Every write runs in one transaction. Labels are append-only: a new label, a skip or an
undo never updates a label's content, it adds a row and marks the previous one
`is_current = 0, superseded_by = <new row>`, so the full history (who, when, what) stays.
A unique index on (task_id, idempotency_key) makes retries and double-clicks idempotent,
and a partial unique index allows at most one current label per task, so two writers can
never both "win". Every change also writes an `audit` row in the same transaction.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from .grades import ASPECT_KEYS, VALID_GRADES

SCHEMA_VERSION = 1
ROLES = ("annotator", "admin")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('annotator', 'admin')),
    password_hash TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    strategy TEXT NOT NULL,
    params TEXT NOT NULL,
    annotators_per_pair INTEGER NOT NULL,
    gold_rate REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    created_by INTEGER REFERENCES users(id),
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    qid TEXT NOT NULL,
    query TEXT NOT NULL,
    video_id TEXT NOT NULL,
    video TEXT NOT NULL,
    is_gold INTEGER NOT NULL DEFAULT 0,
    gold_grade INTEGER,
    stratum TEXT NOT NULL DEFAULT '',
    meta TEXT NOT NULL DEFAULT '{}',
    position INTEGER NOT NULL,
    UNIQUE (batch_id, query, video_id)
);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    pair_id INTEGER NOT NULL REFERENCES pairs(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'skipped')),
    assigned_at TEXT NOT NULL,
    UNIQUE (pair_id, user_id)
);
CREATE INDEX IF NOT EXISTS tasks_user_status ON tasks (user_id, status);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL REFERENCES tasks(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    action TEXT NOT NULL CHECK (action IN ('grade', 'skip', 'undo')),
    grade INTEGER CHECK (grade IS NULL OR grade BETWEEN 0 AND 3),
    term_match INTEGER,
    semantic INTEGER,
    intent INTEGER,
    note TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT NOT NULL,
    undoes INTEGER REFERENCES labels(id),
    is_current INTEGER NOT NULL DEFAULT 0,
    superseded_by INTEGER REFERENCES labels(id),
    created_at TEXT NOT NULL,
    UNIQUE (task_id, idempotency_key)
);
CREATE UNIQUE INDEX IF NOT EXISTS labels_one_current ON labels (task_id) WHERE is_current = 1;
CREATE INDEX IF NOT EXISTS labels_user_key ON labels (user_id, idempotency_key);
CREATE TABLE IF NOT EXISTS adjudications (
    id INTEGER PRIMARY KEY,
    pair_id INTEGER NOT NULL REFERENCES pairs(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    grade INTEGER NOT NULL CHECK (grade BETWEEN 0 AND 3),
    note TEXT NOT NULL DEFAULT '',
    is_current INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS adjudications_one_current ON adjudications (pair_id) WHERE is_current = 1;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    user_id INTEGER REFERENCES users(id),
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL DEFAULT '',
    batch_id INTEGER,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_batch ON audit (batch_id, id);
CREATE INDEX IF NOT EXISTS audit_action ON audit (action, actor, ts);
"""


class AnnotationError(Exception):
    status = 400


class Invalid(AnnotationError):
    status = 400


class Forbidden(AnnotationError):
    status = 403


class NotFound(AnnotationError):
    status = 404


class Conflict(AnnotationError):
    status = 409

    def __init__(self, message: str, detail: dict[str, Any] | None = None):
        super().__init__(message)
        self.detail = detail or {}


@dataclass
class User:
    id: int
    name: str
    role: str
    active: bool
    created_at: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass
class Session:
    user: User
    csrf_token: str
    expires_at: str


@dataclass
class Batch:
    id: int
    name: str
    strategy: str
    params: dict[str, Any]
    annotators_per_pair: int
    gold_rate: float
    status: str
    created_by: int | None
    created_at: str


@dataclass
class PairSpec:
    """One (query, video) pair to put in a batch. `video` is the snapshot shown to
    annotators (the catalog record at batch time, so later catalog changes do not alter
    what was judged)."""
    query: str
    video_id: str
    video: dict[str, Any]
    qid: str | None = None
    stratum: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    is_gold: bool = False
    gold_grade: int | None = None


@dataclass
class Task:
    id: int
    pair_id: int
    batch_id: int
    batch_name: str
    user_id: int
    status: str
    qid: str
    query: str
    video_id: str
    video: dict[str, Any]
    position: int
    current_label: dict[str, Any] | None
    is_gold: bool = False        # never sent to annotators
    stratum: str = ""


@dataclass
class SubmitResult:
    label_id: int
    task_id: int
    replayed: bool
    action: str


@dataclass
class UndoResult:
    undo_id: int
    task_id: int
    undone_label_id: int
    replayed: bool


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")


# --- passwords: stdlib scrypt with a per-user salt -------------------------------------------

SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN = 2 ** 14, 8, 1, 32


def hash_password(password: str, n: int = SCRYPT_N) -> str:
    if not password or len(password) < 8:
        raise Invalid("password must have at least 8 characters")
    if len(password) > 1024:
        raise Invalid("password too long")
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_DKLEN,
                        maxmem=256 * 1024 * 1024)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(dk)}"


def check_password(password: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt, dk = stored.split("$")
        if algo != "scrypt":
            return False
        want = base64.b64decode(dk)
        got = hashlib.scrypt(password.encode("utf-8")[:4096], salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want), maxmem=256 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def qid_for(query: str) -> str:
    """A stable query id: the same query text gets the same qid in every batch and export."""
    from query_understanding.normalize import normalize

    return "q" + hashlib.sha1(normalize(query).encode("utf-8")).hexdigest()[:12]


class AnnotationStore:
    """All reads and writes of the annotation tool. Thread-safe: one connection per thread."""

    def __init__(self, path: str | Path, *, clock: Callable[[], datetime] = utcnow, scrypt_n: int = SCRYPT_N,
                 busy_timeout_ms: int = 15_000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.scrypt_n = scrypt_n
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._dummy_hash: str | None = None
        with self._tx() as c:
            c.executescript_portable(SCHEMA)
            row = c.one("SELECT value FROM meta WHERE key = 'schema_version'")
            if row is None:
                c.exec("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    # --- connections and transactions ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator["_Cursor"]:
        """One write transaction: BEGIN IMMEDIATE (the write lock is taken up front, so two
        writers queue on busy_timeout instead of deadlocking on a lock upgrade), COMMIT, or
        ROLLBACK on any error."""
        conn = self._conn()
        for attempt in range(20):
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as e:  # pragma: no cover - only under heavy contention
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                time.sleep(0.05 * (attempt + 1))
        else:  # pragma: no cover
            raise AnnotationError("database is busy; try again")
        try:
            yield _Cursor(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _read(self) -> "_Cursor":
        return _Cursor(self._conn())

    @contextmanager
    def _snapshot(self) -> Iterator["_Cursor"]:
        """A consistent read of several statements (one read transaction)."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield _Cursor(conn)
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._conns_lock:
            for c in self._conns:
                try:
                    c.close()
                except sqlite3.Error:  # pragma: no cover
                    pass
            self._conns.clear()
        self._local = threading.local()

    def _now(self) -> str:
        return _iso(self.clock())

    def _audit(self, c: "_Cursor", actor: User | None, action: str, entity: str, entity_id: Any = "",
               batch_id: int | None = None, detail: dict[str, Any] | None = None, actor_name: str | None = None) -> None:
        c.exec("INSERT INTO audit (ts, user_id, actor, action, entity, entity_id, batch_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (self._now(), actor.id if actor else None, actor_name or (actor.name if actor else "system"), action, entity,
                str(entity_id), batch_id, json.dumps(detail or {}, ensure_ascii=False, sort_keys=True)))

    # --- meta ------------------------------------------------------------------------------------

    def secret(self) -> bytes:
        """The HMAC key for session cookies: generated on first use and kept in the DB."""
        row = self._read().one("SELECT value FROM meta WHERE key = 'secret'")
        if row:
            return bytes.fromhex(row["value"])
        with self._tx() as c:
            row = c.one("SELECT value FROM meta WHERE key = 'secret'")
            if row:
                return bytes.fromhex(row["value"])
            val = secrets.token_hex(32)
            c.exec("INSERT INTO meta (key, value) VALUES ('secret', ?)", (val,))
            return bytes.fromhex(val)

    # --- users -----------------------------------------------------------------------------------

    @staticmethod
    def _user(row: Any) -> User:
        return User(int(row["id"]), row["name"], row["role"], bool(row["active"]), row["created_at"])

    def create_user(self, name: str, password: str, role: str = "annotator", actor: User | None = None) -> User:
        name = (name or "").strip()
        if not name or len(name) > 64 or any(ch.isspace() or ord(ch) < 32 for ch in name):
            raise Invalid("user name must be 1–64 characters without spaces")
        if role not in ROLES:
            raise Invalid(f"role must be one of {', '.join(ROLES)}")
        pw = hash_password(password, self.scrypt_n)
        with self._tx() as c:
            if c.one("SELECT id FROM users WHERE name = ?", (name,)):
                raise Conflict(f"user {name!r} already exists")
            uid = c.insert("INSERT INTO users (name, role, password_hash, active, created_at) VALUES (?, ?, ?, 1, ?) RETURNING id",
                           (name, role, pw, self._now()))
            self._audit(c, actor, "user.create", "user", uid, detail={"name": name, "role": role})
            return self._user(c.one("SELECT * FROM users WHERE id = ?", (uid,)))

    def set_password(self, name: str, password: str, actor: User | None = None) -> None:
        pw = hash_password(password, self.scrypt_n)
        with self._tx() as c:
            row = c.one("SELECT id FROM users WHERE name = ?", (name,))
            if not row:
                raise NotFound(f"no user {name!r}")
            c.exec("UPDATE users SET password_hash = ? WHERE id = ?", (pw, row["id"]))
            c.exec("DELETE FROM sessions WHERE user_id = ?", (row["id"],))
            self._audit(c, actor, "user.password", "user", row["id"], detail={"name": name})

    def set_active(self, name: str, active: bool, actor: User | None = None) -> None:
        with self._tx() as c:
            row = c.one("SELECT id FROM users WHERE name = ?", (name,))
            if not row:
                raise NotFound(f"no user {name!r}")
            c.exec("UPDATE users SET active = ? WHERE id = ?", (1 if active else 0, row["id"]))
            if not active:
                c.exec("DELETE FROM sessions WHERE user_id = ?", (row["id"],))
            self._audit(c, actor, "user.activate" if active else "user.deactivate", "user", row["id"], detail={"name": name})

    def set_role(self, name: str, role: str, actor: User | None = None) -> None:
        if role not in ROLES:
            raise Invalid(f"role must be one of {', '.join(ROLES)}")
        with self._tx() as c:
            row = c.one("SELECT id FROM users WHERE name = ?", (name,))
            if not row:
                raise NotFound(f"no user {name!r}")
            c.exec("UPDATE users SET role = ? WHERE id = ?", (role, row["id"]))
            self._audit(c, actor, "user.role", "user", row["id"], detail={"name": name, "role": role})

    def get_user(self, user_id: int | None = None, name: str | None = None) -> User | None:
        if user_id is not None:
            row = self._read().one("SELECT * FROM users WHERE id = ?", (user_id,))
        else:
            row = self._read().one("SELECT * FROM users WHERE name = ?", (name,))
        return self._user(row) if row else None

    def list_users(self) -> list[User]:
        return [self._user(r) for r in self._read().all("SELECT * FROM users ORDER BY name")]

    def verify_password(self, name: str, password: str) -> User | None:
        """The user if the name and password match an active account, else None. Unknown
        names cost the same scrypt as known ones (no user enumeration by timing)."""
        row = self._read().one("SELECT * FROM users WHERE name = ?", ((name or "")[:64],))
        if row is None:
            if self._dummy_hash is None:
                self._dummy_hash = hash_password("dummy-password", self.scrypt_n)
            check_password(password or "", self._dummy_hash)
            return None
        if not check_password(password or "", row["password_hash"]) or not row["active"]:
            return None
        return self._user(row)

    def record_login(self, name: str, ok: bool, user: User | None = None, ip: str = "") -> None:
        with self._tx() as c:
            self._audit(c, user, "login.ok" if ok else "login.failed", "user", user.id if user else "",
                        detail={"ip": ip}, actor_name=(name or "")[:64])

    def failed_logins_since(self, name: str, since: datetime) -> int:
        """Failed logins for `name` after `since` and after its last successful login."""
        r = self._read().one("SELECT MAX(ts) AS ts FROM audit WHERE action = 'login.ok' AND actor = ?", ((name or "")[:64],))
        start = max(_iso(since), r["ts"] or "")
        row = self._read().one("SELECT COUNT(*) AS n FROM audit WHERE action = 'login.failed' AND actor = ? AND ts > ?",
                               ((name or "")[:64], start))
        return int(row["n"])

    # --- sessions --------------------------------------------------------------------------------

    def create_session(self, user: User, hours: float = 12) -> tuple[str, str]:
        """A new session: (token for the cookie, CSRF token). Only the token's hash is stored."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self.clock()
        with self._tx() as c:
            c.exec("DELETE FROM sessions WHERE expires_at < ?", (_iso(now),))
            c.exec("INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                   (_token_hash(token), user.id, csrf, _iso(now), _iso(now + timedelta(hours=hours))))
        return token, csrf

    def get_session(self, token: str) -> Session | None:
        if not token:
            return None
        row = self._read().one(
            "SELECT s.csrf_token, s.expires_at, u.* FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
            (_token_hash(token),))
        if row is None or row["expires_at"] < self._now() or not row["active"]:
            return None
        return Session(self._user(row), row["csrf_token"], row["expires_at"])

    def delete_session(self, token: str) -> None:
        with self._tx() as c:
            c.exec("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))

    # --- batches ---------------------------------------------------------------------------------

    @staticmethod
    def _batch(row: Any) -> Batch:
        return Batch(int(row["id"]), row["name"], row["strategy"], json.loads(row["params"]), int(row["annotators_per_pair"]),
                     float(row["gold_rate"]), row["status"], row["created_by"], row["created_at"])

    def create_batch(self, name: str, strategy: str, pairs: list[PairSpec], annotators: list[User], per_pair: int,
                     gold_rate: float = 0.0, params: dict[str, Any] | None = None, actor: User | None = None,
                     seed: int = 0) -> Batch:
        """Create a batch with its pairs in display order and assign each pair to `per_pair`
        annotators (the least loaded first, so work and annotator pairings are balanced)."""
        name = (name or "").strip()
        if not name or len(name) > 100:
            raise Invalid("batch name must be 1–100 characters")
        if not pairs:
            raise Invalid("a batch needs at least one pair")
        if per_pair < 1:
            raise Invalid("annotators per pair must be at least 1")
        if not annotators:
            raise Invalid("a batch needs at least one annotator")
        for u in annotators:
            if not u.active:
                raise Invalid(f"user {u.name!r} is deactivated")
        seen: set[tuple[str, str]] = set()
        for p in pairs:
            if (p.query, p.video_id) in seen:
                raise Invalid(f"duplicate pair ({p.query!r}, {p.video_id!r})")
            seen.add((p.query, p.video_id))
            if p.is_gold and p.gold_grade not in VALID_GRADES:
                raise Invalid(f"gold pair ({p.query!r}, {p.video_id!r}) needs a grade 0–3")
        with self._tx() as c:
            if c.one("SELECT id FROM batches WHERE name = ?", (name,)):
                raise Conflict(f"batch {name!r} already exists")
            bid = c.insert("INSERT INTO batches (name, strategy, params, annotators_per_pair, gold_rate, status, created_by, created_at) "
                           "VALUES (?, ?, ?, ?, ?, 'open', ?, ?) RETURNING id",
                           (name, strategy, json.dumps(params or {}, ensure_ascii=False, sort_keys=True), per_pair, gold_rate,
                            actor.id if actor else None, self._now()))
            for pos, p in enumerate(pairs):
                c.exec("INSERT INTO pairs (batch_id, qid, query, video_id, video, is_gold, gold_grade, stratum, meta, position) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (bid, p.qid or qid_for(p.query), p.query, p.video_id, json.dumps(p.video, ensure_ascii=False),
                        1 if p.is_gold else 0, p.gold_grade if p.is_gold else None, p.stratum,
                        json.dumps(p.meta, ensure_ascii=False, sort_keys=True, default=str), pos))
            n = self._assign(c, bid, annotators, per_pair, seed)
            self._audit(c, actor, "batch.create", "batch", bid, batch_id=bid,
                        detail={"name": name, "strategy": strategy, "pairs": len(pairs), "gold": sum(p.is_gold for p in pairs),
                                "annotators": [u.name for u in annotators], "per_pair": per_pair, "tasks": n})
            return self._batch(c.one("SELECT * FROM batches WHERE id = ?", (bid,)))

    def _assign(self, c: "_Cursor", batch_id: int, annotators: list[User], per_pair: int, seed: int) -> int:
        rng = random.Random(seed)
        pool = list(annotators)
        rng.shuffle(pool)
        load: dict[int, int] = {}
        gold_load: dict[int, int] = {}
        for r in c.all("SELECT t.user_id, p.is_gold, COUNT(*) AS n FROM tasks t JOIN pairs p ON p.id = t.pair_id "
                       "WHERE p.batch_id = ? GROUP BY t.user_id, p.is_gold", (batch_id,)):
            load[r["user_id"]] = load.get(r["user_id"], 0) + int(r["n"])
            if r["is_gold"]:
                gold_load[r["user_id"]] = int(r["n"])
        existing: dict[int, set[int]] = {}
        for r in c.all("SELECT t.pair_id, t.user_id FROM tasks t JOIN pairs p ON p.id = t.pair_id WHERE p.batch_id = ?", (batch_id,)):
            existing.setdefault(r["pair_id"], set()).add(r["user_id"])
        order = {u.id: i for i, u in enumerate(pool)}
        now, added = self._now(), 0
        for pr in c.all("SELECT id, is_gold FROM pairs WHERE batch_id = ? ORDER BY position", (batch_id,)):
            have = existing.get(pr["id"], set())
            need = per_pair - len(have)
            if need <= 0:
                continue
            free = [u for u in pool if u.id not in have]
            key = (lambda u: (gold_load.get(u.id, 0), load.get(u.id, 0), order[u.id])) if pr["is_gold"] else \
                  (lambda u: (load.get(u.id, 0), order[u.id]))
            for u in sorted(free, key=key)[:need]:
                c.exec("INSERT INTO tasks (pair_id, user_id, status, assigned_at) VALUES (?, ?, 'pending', ?)", (pr["id"], u.id, now))
                load[u.id] = load.get(u.id, 0) + 1
                if pr["is_gold"]:
                    gold_load[u.id] = gold_load.get(u.id, 0) + 1
                added += 1
        return added

    def assign(self, batch_id: int, annotators: list[User], per_pair: int | None = None, actor: User | None = None,
               seed: int = 0) -> int:
        """Top up the batch: every pair gets up to `per_pair` annotators from `annotators`
        (e.g. after adding people). Existing tasks and labels are untouched."""
        with self._tx() as c:
            b = c.one("SELECT * FROM batches WHERE id = ?", (batch_id,))
            if not b:
                raise NotFound(f"no batch {batch_id}")
            per = int(per_pair or b["annotators_per_pair"])
            if per_pair and per_pair != b["annotators_per_pair"]:
                c.exec("UPDATE batches SET annotators_per_pair = ? WHERE id = ?", (per, batch_id))
            n = self._assign(c, batch_id, [u for u in annotators if u.active], per, seed)
            self._audit(c, actor, "batch.assign", "batch", batch_id, batch_id=batch_id,
                        detail={"annotators": [u.name for u in annotators], "per_pair": per, "tasks_added": n})
            return n

    def set_batch_status(self, batch_id: int, status: str, actor: User | None = None) -> None:
        if status not in ("open", "closed"):
            raise Invalid("status must be open or closed")
        with self._tx() as c:
            if not c.one("SELECT id FROM batches WHERE id = ?", (batch_id,)):
                raise NotFound(f"no batch {batch_id}")
            c.exec("UPDATE batches SET status = ? WHERE id = ?", (status, batch_id))
            self._audit(c, actor, f"batch.{'open' if status == 'open' else 'close'}", "batch", batch_id, batch_id=batch_id)

    def get_batch(self, batch_id: int | None = None, name: str | None = None) -> Batch | None:
        if batch_id is not None:
            row = self._read().one("SELECT * FROM batches WHERE id = ?", (batch_id,))
        else:
            row = self._read().one("SELECT * FROM batches WHERE name = ?", (name,))
        return self._batch(row) if row else None

    def list_batches(self) -> list[dict[str, Any]]:
        """Every batch with its counts (pairs, gold, tasks done/skipped/pending, annotators)."""
        out = []
        with self._snapshot() as c:
            for row in c.all("SELECT * FROM batches ORDER BY id DESC"):
                b = self._batch(row)
                counts = c.one(
                    "SELECT COUNT(*) AS tasks, "
                    "SUM(CASE WHEN t.status = 'done' THEN 1 ELSE 0 END) AS done, "
                    "SUM(CASE WHEN t.status = 'skipped' THEN 1 ELSE 0 END) AS skipped, "
                    "COUNT(DISTINCT t.user_id) AS annotators "
                    "FROM tasks t JOIN pairs p ON p.id = t.pair_id WHERE p.batch_id = ?", (b.id,))
                pc = c.one("SELECT COUNT(*) AS pairs, SUM(is_gold) AS gold FROM pairs WHERE batch_id = ?", (b.id,))
                out.append({"batch": b, "pairs": int(pc["pairs"] or 0), "gold": int(pc["gold"] or 0), "tasks": int(counts["tasks"] or 0),
                            "done": int(counts["done"] or 0), "skipped": int(counts["skipped"] or 0),
                            "annotators": int(counts["annotators"] or 0)})
        return out

    def pairs_for_batch(self, batch_id: int) -> list[dict[str, Any]]:
        rows = self._read().all("SELECT * FROM pairs WHERE batch_id = ? ORDER BY position", (batch_id,))
        return [{**dict(r), "video": json.loads(r["video"]), "meta": json.loads(r["meta"]), "is_gold": bool(r["is_gold"])} for r in rows]

    def batches_for_user(self, user_id: int) -> list[dict[str, Any]]:
        """The open batches the user has tasks in, with their progress."""
        rows = self._read().all(
            "SELECT b.id, b.name, COUNT(*) AS tasks, "
            "SUM(CASE WHEN t.status = 'done' THEN 1 ELSE 0 END) AS done, "
            "SUM(CASE WHEN t.status = 'skipped' THEN 1 ELSE 0 END) AS skipped "
            "FROM tasks t JOIN pairs p ON p.id = t.pair_id JOIN batches b ON b.id = p.batch_id "
            "WHERE t.user_id = ? AND b.status = 'open' GROUP BY b.id, b.name ORDER BY b.id", (user_id,))
        return [{"id": int(r["id"]), "name": r["name"], "tasks": int(r["tasks"]), "done": int(r["done"] or 0),
                 "skipped": int(r["skipped"] or 0)} for r in rows]

    # --- tasks -----------------------------------------------------------------------------------

    _TASK_SQL = ("SELECT t.id, t.pair_id, t.user_id, t.status, p.batch_id, b.name AS batch_name, b.status AS batch_status, "
                 "p.qid, p.query, p.video_id, p.video, p.position, p.is_gold, p.stratum "
                 "FROM tasks t JOIN pairs p ON p.id = t.pair_id JOIN batches b ON b.id = p.batch_id ")

    def _task(self, c: "_Cursor", row: Any) -> Task:
        cur = c.one("SELECT id, action, grade, term_match, semantic, intent, note, created_at FROM labels "
                    "WHERE task_id = ? AND is_current = 1", (row["id"],))
        return Task(int(row["id"]), int(row["pair_id"]), int(row["batch_id"]), row["batch_name"], int(row["user_id"]), row["status"],
                    row["qid"], row["query"], row["video_id"], json.loads(row["video"]), int(row["position"]),
                    dict(cur) if cur else None, bool(row["is_gold"]), row["stratum"])

    def get_task(self, task_id: int, user: User) -> Task:
        """A task, if it is the user's own (admins may read any task; nobody writes another's)."""
        with self._snapshot() as c:
            row = c.one(self._TASK_SQL + "WHERE t.id = ?", (task_id,))
            if row is None:
                raise NotFound(f"no task {task_id}")
            if row["user_id"] != user.id and not user.is_admin:
                raise Forbidden("this task is assigned to another annotator")
            return self._task(c, row)

    def next_task(self, user: User, batch_id: int | None = None) -> Task | None:
        """The user's next task: pending tasks in batch then display order; skipped tasks come
        back after every pending one is done."""
        where = "WHERE t.user_id = ? AND b.status = 'open' AND t.status = ? "
        args: tuple[Any, ...] = (user.id,)
        if batch_id is not None:
            where += "AND p.batch_id = ? "
        with self._snapshot() as c:
            for status in ("pending", "skipped"):
                a = args + (status,) + ((batch_id,) if batch_id is not None else ())
                row = c.one(self._TASK_SQL + where + "ORDER BY p.batch_id, p.position, t.id LIMIT 1", a)
                if row is not None:
                    return self._task(c, row)
        return None

    def progress(self, user: User, batch_id: int) -> dict[str, int]:
        r = self._read().one(
            "SELECT COUNT(*) AS total, SUM(CASE WHEN t.status = 'done' THEN 1 ELSE 0 END) AS done, "
            "SUM(CASE WHEN t.status = 'skipped' THEN 1 ELSE 0 END) AS skipped "
            "FROM tasks t JOIN pairs p ON p.id = t.pair_id WHERE t.user_id = ? AND p.batch_id = ?", (user.id, batch_id))
        total, done, skipped = int(r["total"] or 0), int(r["done"] or 0), int(r["skipped"] or 0)
        return {"total": total, "done": done, "skipped": skipped, "pending": total - done - skipped}

    def recent_labels(self, user: User, batch_id: int, limit: int = 5) -> list[dict[str, Any]]:
        rows = self._read().all(
            "SELECT l.id, l.task_id, l.action, l.grade, l.created_at, p.query, p.video FROM labels l "
            "JOIN tasks t ON t.id = l.task_id JOIN pairs p ON p.id = t.pair_id "
            "WHERE l.user_id = ? AND p.batch_id = ? AND l.is_current = 1 ORDER BY l.id DESC LIMIT ?", (user.id, batch_id, limit))
        return [{"label_id": r["id"], "task_id": r["task_id"], "action": r["action"], "grade": r["grade"], "created_at": r["created_at"],
                 "query": r["query"], "title": json.loads(r["video"]).get("title", "")} for r in rows]

    # --- labels ----------------------------------------------------------------------------------

    def submit_label(self, user: User, task_id: int, grade: int | None, *, idempotency_key: str,
                     aspects: dict[str, bool | None] | None = None, note: str = "", skip: bool = False,
                     expected_label_id: int | None = None) -> SubmitResult:
        """Grade (or skip) one of the user's own tasks.

        Idempotent: the same `idempotency_key` again (a double-click, a retried request)
        returns the first result and writes nothing. Optimistic concurrency: the caller says
        which label it saw as current (`expected_label_id`, None for an unlabelled task); if
        another tab or request changed the task since, this raises Conflict instead of
        silently overwriting it."""
        key = (idempotency_key or "").strip()
        if not key or len(key) > 128:
            raise Invalid("idempotency_key is required (at most 128 characters)")
        action = "skip" if skip else "grade"
        if action == "grade":
            try:
                grade = int(grade)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise Invalid("grade must be 0, 1, 2 or 3") from None
            if grade not in VALID_GRADES:
                raise Invalid("grade must be 0, 1, 2 or 3")
        else:
            grade = None
        asp = {k: None for k in ASPECT_KEYS}
        for k, v in (aspects or {}).items():
            if k not in asp:
                raise Invalid(f"unknown aspect {k!r}; use {', '.join(ASPECT_KEYS)}")
            asp[k] = None if v is None else (1 if v else 0)
        note = (note or "").strip()
        if len(note) > 2000:
            raise Invalid("note is too long (2000 characters at most)")
        with self._tx() as c:
            task = c.one(self._TASK_SQL + "WHERE t.id = ?", (task_id,))
            if task is None:
                raise NotFound(f"no task {task_id}")
            if task["user_id"] != user.id:
                raise Forbidden("this task is assigned to another annotator")
            prior = c.one("SELECT * FROM labels WHERE user_id = ? AND idempotency_key = ?", (user.id, key))
            if prior is not None:
                same = (prior["task_id"] == task_id and prior["action"] == action and prior["grade"] == grade)
                if not same:
                    raise Conflict("idempotency key already used for a different request")
                return SubmitResult(int(prior["id"]), task_id, True, action)
            if task["batch_status"] != "open":
                raise Conflict("this batch is closed")
            cur = c.one("SELECT id, action, grade FROM labels WHERE task_id = ? AND is_current = 1", (task_id,))
            cur_id = int(cur["id"]) if cur else None
            if cur_id != (int(expected_label_id) if expected_label_id is not None else None):
                raise Conflict("this task changed since you opened it (another tab or request labelled it)",
                               {"current_label_id": cur_id, "current_grade": cur["grade"] if cur else None,
                                "current_action": cur["action"] if cur else None})
            if cur_id is not None:
                c.exec("UPDATE labels SET is_current = 0 WHERE id = ?", (cur_id,))
            lid = c.insert("INSERT INTO labels (task_id, user_id, action, grade, term_match, semantic, intent, note, idempotency_key, "
                           "is_current, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?) RETURNING id",
                           (task_id, user.id, action, grade, asp["term_match"], asp["semantic"], asp["intent"], note, key, self._now()))
            if cur_id is not None:
                c.exec("UPDATE labels SET superseded_by = ? WHERE id = ?", (lid, cur_id))
            c.exec("UPDATE tasks SET status = ? WHERE id = ?", ("done" if action == "grade" else "skipped", task_id))
            self._audit(c, user, f"label.{action}", "task", task_id, batch_id=task["batch_id"],
                        detail={"label_id": lid, "grade": grade, "aspects": asp, "note": note, "replaces": cur_id})
            return SubmitResult(lid, task_id, False, action)

    def undo(self, user: User, batch_id: int, *, idempotency_key: str) -> UndoResult:
        """Take back the user's latest current label (or skip) in the batch: the task is
        pending again and will be shown next. Repeated undos go further back. The undone
        label stays in the history (superseded by the undo row)."""
        key = (idempotency_key or "").strip()
        if not key or len(key) > 128:
            raise Invalid("idempotency_key is required (at most 128 characters)")
        with self._tx() as c:
            prior = c.one("SELECT * FROM labels WHERE user_id = ? AND idempotency_key = ?", (user.id, key))
            if prior is not None:
                if prior["action"] != "undo":
                    raise Conflict("idempotency key already used for a different request")
                return UndoResult(int(prior["id"]), int(prior["task_id"]), int(prior["undoes"]), True)
            b = c.one("SELECT status FROM batches WHERE id = ?", (batch_id,))
            if b is None:
                raise NotFound(f"no batch {batch_id}")
            if b["status"] != "open":
                raise Conflict("this batch is closed")
            last = c.one("SELECT l.id, l.task_id FROM labels l JOIN tasks t ON t.id = l.task_id JOIN pairs p ON p.id = t.pair_id "
                         "WHERE l.user_id = ? AND t.user_id = ? AND p.batch_id = ? AND l.is_current = 1 "
                         "ORDER BY l.id DESC LIMIT 1", (user.id, user.id, batch_id))
            if last is None:
                raise Conflict("nothing to undo")
            c.exec("UPDATE labels SET is_current = 0 WHERE id = ?", (last["id"],))
            uid = c.insert("INSERT INTO labels (task_id, user_id, action, idempotency_key, undoes, is_current, created_at) "
                           "VALUES (?, ?, 'undo', ?, ?, 0, ?) RETURNING id", (last["task_id"], user.id, key, last["id"], self._now()))
            c.exec("UPDATE labels SET superseded_by = ? WHERE id = ?", (uid, last["id"]))
            c.exec("UPDATE tasks SET status = 'pending' WHERE id = ?", (last["task_id"],))
            self._audit(c, user, "label.undo", "task", last["task_id"], batch_id=batch_id,
                        detail={"undo_id": uid, "undone_label_id": last["id"]})
            return UndoResult(uid, int(last["task_id"]), int(last["id"]), False)

    def labels_for_batch(self, batch_id: int, current_only: bool = True, include_gold: bool = True) -> list[dict[str, Any]]:
        """Labels of a batch with their pair and annotator: the current grades (default) or
        the whole history (every grade, skip and undo, with who and when)."""
        sql = ("SELECT l.id, l.task_id, l.action, l.grade, l.term_match, l.semantic, l.intent, l.note, l.created_at, l.is_current, "
               "l.superseded_by, l.undoes, l.idempotency_key, u.name AS annotator, u.id AS user_id, p.id AS pair_id, p.qid, p.query, "
               "p.video_id, p.is_gold, p.gold_grade, p.stratum FROM labels l JOIN tasks t ON t.id = l.task_id "
               "JOIN pairs p ON p.id = t.pair_id JOIN users u ON u.id = l.user_id WHERE p.batch_id = ? ")
        if current_only:
            sql += "AND l.is_current = 1 AND l.action = 'grade' "
        if not include_gold:
            sql += "AND p.is_gold = 0 "
        rows = self._read().all(sql + "ORDER BY l.id", (batch_id,))
        return [{**dict(r), "is_gold": bool(r["is_gold"]), "is_current": bool(r["is_current"])} for r in rows]

    def label_history(self, task_id: int) -> list[dict[str, Any]]:
        rows = self._read().all("SELECT l.*, u.name AS annotator FROM labels l JOIN users u ON u.id = l.user_id "
                                "WHERE l.task_id = ? ORDER BY l.id", (task_id,))
        return [dict(r) for r in rows]

    def tasks_for_batch(self, batch_id: int) -> list[dict[str, Any]]:
        rows = self._read().all("SELECT t.id, t.pair_id, t.status, u.name AS annotator FROM tasks t JOIN pairs p ON p.id = t.pair_id "
                                "JOIN users u ON u.id = t.user_id WHERE p.batch_id = ? ORDER BY p.position, u.name", (batch_id,))
        return [dict(r) for r in rows]

    # --- adjudication ----------------------------------------------------------------------------

    def adjudicate(self, pair_id: int, grade: int, actor: User, note: str = "") -> int:
        if not actor.is_admin:
            raise Forbidden("only admins adjudicate")
        try:
            grade = int(grade)
        except (TypeError, ValueError):
            raise Invalid("grade must be 0, 1, 2 or 3") from None
        if grade not in VALID_GRADES:
            raise Invalid("grade must be 0, 1, 2 or 3")
        with self._tx() as c:
            p = c.one("SELECT id, batch_id FROM pairs WHERE id = ?", (pair_id,))
            if p is None:
                raise NotFound(f"no pair {pair_id}")
            prev = c.one("SELECT id, grade FROM adjudications WHERE pair_id = ? AND is_current = 1", (pair_id,))
            if prev is not None:
                c.exec("UPDATE adjudications SET is_current = 0 WHERE id = ?", (prev["id"],))
            aid = c.insert("INSERT INTO adjudications (pair_id, user_id, grade, note, is_current, created_at) VALUES (?, ?, ?, ?, 1, ?) "
                           "RETURNING id", (pair_id, actor.id, grade, (note or "").strip()[:2000], self._now()))
            self._audit(c, actor, "pair.adjudicate", "pair", pair_id, batch_id=p["batch_id"],
                        detail={"grade": grade, "note": note, "replaces": prev["id"] if prev else None,
                                "previous_grade": prev["grade"] if prev else None})
            return aid

    def adjudications_for_batch(self, batch_id: int) -> dict[int, dict[str, Any]]:
        rows = self._read().all("SELECT a.*, u.name AS adjudicator FROM adjudications a JOIN pairs p ON p.id = a.pair_id "
                                "JOIN users u ON u.id = a.user_id WHERE p.batch_id = ? AND a.is_current = 1", (batch_id,))
        return {int(r["pair_id"]): dict(r) for r in rows}

    # --- audit -----------------------------------------------------------------------------------

    def log_event(self, actor: User | None, action: str, entity: str, entity_id: Any = "", batch_id: int | None = None,
                  detail: dict[str, Any] | None = None) -> None:
        """Record an event that changes nothing else (e.g. an export)."""
        with self._tx() as c:
            self._audit(c, actor, action, entity, entity_id, batch_id, detail)

    def audit_log(self, limit: int = 200, batch_id: int | None = None, action: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM audit WHERE 1 = 1 ", []
        if batch_id is not None:
            sql += "AND batch_id = ? "
            args.append(batch_id)
        if action:
            sql += "AND action = ? "
            args.append(action)
        rows = self._read().all(sql + "ORDER BY id DESC LIMIT ?", tuple(args) + (int(limit),))
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]


class _Cursor:
    """Thin helper over a DB-API connection: the only place that touches the driver."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def exec(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        self.conn.execute(sql, args)

    def insert(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """INSERT … RETURNING id (SQLite ≥ 3.35 and PostgreSQL)."""
        return int(self.conn.execute(sql, args).fetchone()[0])

    def one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return self.conn.execute(sql, args).fetchone()

    def all(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        return self.conn.execute(sql, args).fetchall()

    def executescript_portable(self, script: str) -> None:
        """Run DDL statement by statement inside the current transaction (sqlite3's
        executescript would COMMIT first)."""
        for stmt in script.split(";"):
            if stmt.strip():
                self.conn.execute(stmt)
