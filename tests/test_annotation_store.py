"""Storage layer of the annotation tool: accounts, sessions, batches and assignment,
idempotent and conflict-safe label writes, undo, history and audit, concurrent writers."""
from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from search.annotation.store import (AnnotationStore, Conflict, Forbidden, Invalid, NotFound, PairSpec, check_password,
                                     hash_password, qid_for)

FAST_SCRYPT = 2 ** 10  # the production default (2**14) is exercised by the API tests


def _store(tmp_path, name="ann.sqlite", **kw) -> AnnotationStore:
    return AnnotationStore(tmp_path / name, scrypt_n=FAST_SCRYPT, **kw)


def _pairs(n: int, gold: int = 0) -> list[PairSpec]:
    out = [PairSpec(f"query {i // 3}", f"v{i}", {"video_id": f"v{i}", "title": f"title {i}"}) for i in range(n)]
    out += [PairSpec(f"gold query {i}", f"g{i}", {"video_id": f"g{i}", "title": f"gold {i}"}, is_gold=True, gold_grade=i % 4)
            for i in range(gold)]
    return out


@pytest.fixture()
def world(tmp_path):
    st = _store(tmp_path)
    admin = st.create_user("lead", "lead-password", "admin")
    anns = [st.create_user(n, f"{n}-password") for n in ("alice", "bob", "carol")]
    batch = st.create_batch("b1", "upload", _pairs(9, gold=2), anns, per_pair=2, gold_rate=0.2, actor=admin)
    yield st, admin, anns, batch
    st.close()


def test_sqlite_setup_wal_foreign_keys(world):
    st, *_ = world
    conn = sqlite3.connect(st.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    c = st._conn()
    assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert c.execute("PRAGMA busy_timeout").fetchone()[0] == 15000
    with pytest.raises(sqlite3.IntegrityError):  # foreign keys are enforced
        with st._tx() as cur:
            cur.exec("INSERT INTO tasks (pair_id, user_id, status, assigned_at) VALUES (9999, 9999, 'pending', 'x')")


def test_passwords_are_salted_scrypt_hashes(tmp_path):
    h1, h2 = hash_password("correct horse", FAST_SCRYPT), hash_password("correct horse", FAST_SCRYPT)
    assert h1 != h2 and h1.startswith("scrypt$") and "correct horse" not in h1
    assert check_password("correct horse", h1) and not check_password("correct hors", h1)
    assert not check_password("x", "garbage") and not check_password("x", "md5$abc")
    with pytest.raises(Invalid):
        hash_password("short")
    st = _store(tmp_path)
    st.create_user("alice", "alice-password")
    row = st._read().one("SELECT password_hash FROM users WHERE name = 'alice'")
    assert "alice-password" not in row["password_hash"]
    assert st.verify_password("alice", "alice-password").name == "alice"
    assert st.verify_password("alice", "wrong-password") is None
    assert st.verify_password("nobody", "alice-password") is None
    with pytest.raises(Conflict):
        st.create_user("alice", "another-password")
    with pytest.raises(Invalid):
        st.create_user("bad name", "whatever-pass")
    with pytest.raises(Invalid):
        st.create_user("eve", "whatever-pass", role="root")
    st.set_active("alice", False)
    assert st.verify_password("alice", "alice-password") is None  # deactivated accounts cannot log in


def test_sessions_expire_and_are_stored_hashed(tmp_path):
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    st = _store(tmp_path, clock=lambda: now[0])
    u = st.create_user("alice", "alice-password")
    token, csrf = st.create_session(u, hours=1)
    assert st.get_session(token).user.name == "alice" and st.get_session(token).csrf_token == csrf
    assert st._read().one("SELECT COUNT(*) AS n FROM sessions WHERE token_hash = ?", (token,))["n"] == 0  # only the hash
    assert st.get_session("forged") is None and st.get_session("") is None
    now[0] += timedelta(hours=2)
    assert st.get_session(token) is None
    t2, _ = st.create_session(u)
    st.set_password("alice", "new-password-1")  # a password change ends every session
    assert st.get_session(t2) is None
    t3, _ = st.create_session(u)
    st.delete_session(t3)
    assert st.get_session(t3) is None


def test_secret_is_generated_once(tmp_path):
    st = _store(tmp_path)
    s1 = st.secret()
    assert len(s1) == 32 and _store(tmp_path).secret() == s1


def test_batch_assignment_is_balanced_and_complete(world):
    st, admin, anns, batch = world
    tasks = st.tasks_for_batch(batch.id)
    per_pair = Counter(t["pair_id"] for t in tasks)
    assert len(per_pair) == 11 and set(per_pair.values()) == {2}  # every pair (incl. gold) → 2 annotators
    load = Counter(t["annotator"] for t in tasks)
    assert max(load.values()) - min(load.values()) <= 1
    gold_ids = {p["id"] for p in st.pairs_for_batch(batch.id) if p["is_gold"]}
    gold_load = Counter(t["annotator"] for t in tasks if t["pair_id"] in gold_ids)
    assert max(gold_load.values()) - min(gold_load.values()) <= 1
    assert [p["position"] for p in st.pairs_for_batch(batch.id)] == list(range(11))
    assert st.pairs_for_batch(batch.id)[0]["qid"] == qid_for("query 0")
    # top up with a new annotator raises coverage to 3 without touching existing tasks
    dave = st.create_user("dave", "dave-password")
    added = st.assign(batch.id, anns + [dave], per_pair=3, actor=admin)
    assert added == 11 and set(Counter(t["pair_id"] for t in st.tasks_for_batch(batch.id)).values()) == {3}
    with pytest.raises(Conflict):
        st.create_batch("b1", "upload", _pairs(2), anns, 1)
    with pytest.raises(Invalid):
        st.create_batch("dup", "upload", _pairs(2) + _pairs(1), anns, 1)
    with pytest.raises(Invalid):
        st.create_batch("nogold", "upload", [PairSpec("q", "v", {}, is_gold=True)], anns, 1)


def test_submit_is_idempotent(world):
    st, admin, (alice, bob, carol), batch = world
    t = st.next_task(alice)
    r1 = st.submit_label(alice, t.id, 3, idempotency_key="k1", aspects={"term_match": True, "intent": False}, note="ok")
    r2 = st.submit_label(alice, t.id, 3, idempotency_key="k1", aspects={"term_match": True}, note="ok")  # double-click / retry
    assert not r1.replayed and r2.replayed and r1.label_id == r2.label_id
    hist = st.label_history(t.id)
    assert len(hist) == 1 and hist[0]["grade"] == 3 and hist[0]["term_match"] == 1 and hist[0]["intent"] == 0 and hist[0]["semantic"] is None
    # the same key for a different request is refused, not silently applied
    with pytest.raises(Conflict):
        st.submit_label(alice, t.id, 1, idempotency_key="k1", expected_label_id=r1.label_id)
    assert st.progress(alice, batch.id)["done"] == 1
    # the unique index makes a duplicate impossible even past the application check
    with pytest.raises(sqlite3.IntegrityError):
        with st._tx() as c:
            c.exec("INSERT INTO labels (task_id, user_id, action, grade, idempotency_key, is_current, created_at) "
                   "VALUES (?, ?, 'grade', 2, 'k1', 0, 'x')", (t.id, alice.id))


def test_stale_write_is_a_conflict_and_edits_keep_history(world):
    st, admin, (alice, *_), batch = world
    t = st.next_task(alice)
    first = st.submit_label(alice, t.id, 2, idempotency_key="a")
    with pytest.raises(Conflict) as e:  # another tab, opened before the first grade, submits
        st.submit_label(alice, t.id, 0, idempotency_key="b", expected_label_id=None)
    assert e.value.detail["current_grade"] == 2
    edit = st.submit_label(alice, t.id, 3, idempotency_key="c", expected_label_id=first.label_id)  # a deliberate edit
    hist = st.label_history(t.id)
    assert [(h["grade"], h["is_current"], h["superseded_by"]) for h in hist] == [(2, 0, edit.label_id), (3, 1, None)]
    assert all(h["annotator"] == "alice" and h["created_at"] for h in hist)
    with pytest.raises(Invalid):
        st.submit_label(alice, t.id, 7, idempotency_key="d", expected_label_id=edit.label_id)
    with pytest.raises(Invalid):
        st.submit_label(alice, t.id, 1, idempotency_key="", expected_label_id=edit.label_id)
    with pytest.raises(Invalid):
        st.submit_label(alice, t.id, 1, idempotency_key="e", aspects={"color": True}, expected_label_id=edit.label_id)


def test_annotators_only_see_and_write_their_own_tasks(world):
    st, admin, (alice, bob, carol), batch = world
    bobs = {t["id"] for t in st.tasks_for_batch(batch.id) if t["annotator"] == "bob"}
    alices = {t["id"] for t in st.tasks_for_batch(batch.id) if t["annotator"] == "alice"}
    other = sorted(bobs - alices)[0]
    with pytest.raises(Forbidden):
        st.get_task(other, alice)
    with pytest.raises(Forbidden):
        st.submit_label(alice, other, 3, idempotency_key="x")
    with pytest.raises(NotFound):
        st.get_task(99999, alice)
    assert st.get_task(other, admin).id == other  # admins may read (for review)…
    with pytest.raises(Forbidden):
        st.submit_label(admin, other, 3, idempotency_key="x")  # …but not write another's label
    seen = set()
    while (t := st.next_task(alice)) is not None:
        assert t.user_id == alice.id
        seen.add(t.id)
        st.submit_label(alice, t.id, 1, idempotency_key=f"k{t.id}")
    assert seen == alices
    assert st.labels_for_batch(batch.id) and all(r["annotator"] == "alice" for r in st.labels_for_batch(batch.id))


def test_skip_comes_back_last_and_undo_walks_back(world):
    st, admin, (alice, *_), batch = world
    order = []
    t1 = st.next_task(alice)
    st.submit_label(alice, t1.id, None, skip=True, idempotency_key="s1")
    t2 = st.next_task(alice)
    assert t2.id != t1.id
    l2 = st.submit_label(alice, t2.id, 3, idempotency_key="g2")
    t3 = st.next_task(alice)
    l3 = st.submit_label(alice, t3.id, 0, idempotency_key="g3")
    u1 = st.undo(alice, batch.id, idempotency_key="u1")
    assert (u1.task_id, u1.undone_label_id) == (t3.id, l3.label_id)
    assert st.undo(alice, batch.id, idempotency_key="u1").replayed  # a retried undo undoes nothing more
    assert st.next_task(alice).id == t3.id and st.get_task(t3.id, alice).current_label is None
    u2 = st.undo(alice, batch.id, idempotency_key="u2")
    assert u2.task_id == t2.id and u2.undone_label_id == l2.label_id
    hist = st.label_history(t3.id)
    assert [h["action"] for h in hist] == ["grade", "undo"] and hist[0]["superseded_by"] == hist[1]["id"] and hist[1]["undoes"] == hist[0]["id"]
    # finish the pending tasks; the skipped one is last
    while (t := st.next_task(alice)) is not None:
        order.append(t.id)
        st.submit_label(alice, t.id, 2, idempotency_key=f"f{t.id}", expected_label_id=t.current_label["id"] if t.current_label else None)
    assert order[-1] == t1.id
    p = st.progress(alice, batch.id)
    assert p["done"] == p["total"] and p["skipped"] == 0
    st.undo(alice, batch.id, idempotency_key="u3")
    st.undo(alice, batch.id, idempotency_key="u4")
    st2 = _store(st.path.parent)  # nothing to undo for a user without labels
    with pytest.raises(Conflict):
        st2.undo(st2.get_user(name="bob"), batch.id, idempotency_key="u5")


def test_closed_batch_takes_no_labels(world):
    st, admin, (alice, *_), batch = world
    t = st.next_task(alice)
    st.set_batch_status(batch.id, "closed", actor=admin)
    assert st.next_task(alice) is None and st.batches_for_user(alice.id) == []
    with pytest.raises(Conflict):
        st.submit_label(alice, t.id, 3, idempotency_key="z")
    st.set_batch_status(batch.id, "open", actor=admin)
    assert st.next_task(alice).id == t.id


def test_audit_trail_records_who_and_when(world):
    st, admin, (alice, bob, carol), batch = world
    t = st.next_task(alice)
    st.submit_label(alice, t.id, 3, idempotency_key="a1", note="clear MV")
    st.undo(alice, batch.id, idempotency_key="a2")
    pid = st.pairs_for_batch(batch.id)[0]["id"]
    st.adjudicate(pid, 2, admin, "cover, not the original")
    with pytest.raises(Forbidden):
        st.adjudicate(pid, 2, alice)
    st.record_login("alice", False)
    log = st.audit_log(50)
    actions = [(r["actor"], r["action"]) for r in log]
    for want in [("system", "user.create"), ("lead", "batch.create"), ("alice", "label.grade"), ("alice", "label.undo"),
                 ("lead", "pair.adjudicate"), ("alice", "login.failed")]:
        assert want in actions
    grade_row = next(r for r in log if r["action"] == "label.grade")
    assert grade_row["detail"]["grade"] == 3 and grade_row["detail"]["note"] == "clear MV" and grade_row["batch_id"] == batch.id
    assert all(datetime.fromisoformat(r["ts"]) for r in log)
    assert [r["action"] for r in st.audit_log(10, batch_id=batch.id)][0] == "pair.adjudicate"
    assert st.failed_logins_since("alice", datetime.now(timezone.utc) - timedelta(minutes=5)) == 1
    st.record_login("alice", True, alice)
    assert st.failed_logins_since("alice", datetime.now(timezone.utc) - timedelta(minutes=5)) == 0  # a success resets


def test_concurrent_writers_never_lose_labels(tmp_path):
    """Six threads, each with its own connection (like separate worker processes), write at
    once into one DB file: every annotator grades all their tasks, every submission is sent
    twice (a retry), and two tabs of one annotator race on the same tasks."""
    setup = _store(tmp_path)
    users = [setup.create_user(f"u{i}", f"password-{i}") for i in range(4)]
    batch = setup.create_batch("race", "upload", _pairs(30), users, per_pair=3)
    setup.close()
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)
    conflicts = Counter()

    def annotate(user_idx: int) -> None:
        st = _store(tmp_path)
        try:
            user = st.get_user(name=f"u{user_idx}")
            barrier.wait()
            while (t := st.next_task(user, batch.id)) is not None:
                try:
                    for _ in range(2):  # the retry must not duplicate
                        st.submit_label(user, t.id, (t.id + user_idx) % 4, idempotency_key=f"{user.name}-{t.id}")
                except Conflict:  # the second tab got there first: nothing was overwritten
                    conflicts[f"main{user_idx}"] += 1
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            st.close()

    def second_tab(user_idx: int, tag: str) -> None:
        st = _store(tmp_path)
        try:
            user = st.get_user(name=f"u{user_idx}")
            barrier.wait()
            for tid in [t["id"] for t in st.tasks_for_batch(batch.id) if t["annotator"] == user.name]:
                try:
                    st.submit_label(user, tid, 0, idempotency_key=f"{tag}-{tid}")
                except Conflict:
                    conflicts[tag] += 1
        except BaseException as e:  # pragma: no cover
            errors.append(e)
        finally:
            st.close()

    threads = [threading.Thread(target=annotate, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=second_tab, args=(0, "tabA")), threading.Thread(target=second_tab, args=(1, "tabB"))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    st = _store(tmp_path)
    tasks = st.tasks_for_batch(batch.id)
    current = st.labels_for_batch(batch.id)
    assert len(tasks) == 90 and all(t["status"] == "done" for t in tasks)
    assert len(current) == 90 and len({r["task_id"] for r in current}) == 90  # exactly one current label per task
    hist = st.labels_for_batch(batch.id, current_only=False)
    assert len(hist) == 90  # no duplicate from retries; a losing tab wrote nothing
    # every task of u0/u1 was won by exactly one writer: the annotator's own loop or the second tab
    for tag, uname in (("tabA", "u0"), ("tabB", "u1")):
        n_tasks = sum(t["annotator"] == uname for t in tasks)
        tab_wins = sum(1 for r in current if r["annotator"] == uname and r["idempotency_key"].startswith(tag))
        main_wins = sum(1 for r in current if r["annotator"] == uname and r["idempotency_key"].startswith(uname + "-"))
        assert tab_wins + main_wins == n_tasks and tab_wins + conflicts[tag] == n_tasks
        assert main_wins + conflicts[f"main{uname[1]}"] >= n_tasks - tab_wins
    audit_grades = st.audit_log(1000, action="label.grade")
    assert len(audit_grades) == 90
