"""The annotation web app through HTTP (FastAPI TestClient): login, sessions and CSRF,
roles, own-task isolation, idempotent JSON writes, safe rendering, admin forms, export;
and the `mvsearch annotate` CLI round trip into `mvsearch eval search`."""
from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from search.annotation.store import PairSpec
from search.api import create_app
from search.cli import main
from search.config import load_config
from search.evaluation import load_judgements
from search.pipeline import SearchPipeline

XSS_TITLE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">晴天'


@pytest.fixture(scope="module")
def app_env(embedded_index, tmp_path_factory):
    db = tmp_path_factory.mktemp("annapi") / "annotation.sqlite"
    cfg = load_config(None, {"engine": {"kind": "embedded", "index_dir": str(embedded_index)},
                             "annotation": {"db_path": str(db), "login_max_failures": 3}})
    pipe = SearchPipeline(cfg)
    app = create_app(pipe)
    assert not db.exists()  # the database is opened on first use, not by create_app
    st = app.state.annotation
    store = st.store
    lead = store.create_user("lead", "lead-password", "admin")
    alice = store.create_user("alice", "alice-password")
    bob = store.create_user("bob", "bob-password")
    store.create_user("mallory", "mallory-password")
    pairs = [PairSpec("周杰伦 晴天", "t-qingtian-mv", {"video_id": "t-qingtian-mv", "title": XSS_TITLE, "description": "<b>desc</b>",
                                                    "tags": ["<i>tag</i>"], "artists": ["周杰伦"], "songs": ["晴天"]}),
             PairSpec("hebe", "t-hebe-1", {"video_id": "t-hebe-1", "title": "田馥甄《小幸运》官方MV"}),
             PairSpec("hebe", "t-she", {"video_id": "t-she", "title": "S.H.E《不想长大》MV"}),
             PairSpec("gold", "t-gem", {"video_id": "t-gem", "title": "G.E.M."}, is_gold=True, gold_grade=0)]
    batch = store.create_batch("api", "upload", pairs, [alice, bob], per_pair=2, actor=lead)
    yield {"app": app, "store": store, "batch": batch, "db": db, "pipe": pipe}
    st.close()
    pipe.close()


def login(app, name, password, next_url="/annotate") -> TestClient:
    c = TestClient(app)
    page = c.get("/annotate/login")
    tok = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
    r = c.post("/annotate/login", data={"username": name, "password": password, "login_token": tok, "next": next_url},
               follow_redirects=False)
    assert r.status_code == 303, r.text
    return c


def csrf_of(c: TestClient, url="/annotate") -> tuple[str, str]:
    page = c.get(url)
    return re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1), page.text


def test_login_cookie_flags_and_redirects(app_env):
    app = app_env["app"]
    c = TestClient(app)
    r = c.get("/annotate", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/annotate/login?next=")
    assert c.get("/annotate/api/next").status_code == 401
    page = c.get("/annotate/login")
    assert page.status_code == 200 and "Content-Security-Policy" in page.headers
    tok = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
    r = c.post("/annotate/login", data={"username": "alice", "password": "alice-password", "login_token": tok, "next": "//evil.example/x"},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/annotate"  # no open redirect
    cookie = [h for h in r.headers.get_list("set-cookie") if h.startswith("mvs_ann_session=")][0]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/annotate" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    token, sig = value.rsplit(".", 1)
    assert len(sig) == 64
    assert c.get("/annotate").status_code == 200
    # a tampered signature is not a session
    c2 = TestClient(app)
    c2.cookies.set("mvs_ann_session", token + "." + "0" * 64, path="/annotate")
    assert c2.get("/annotate", follow_redirects=False).status_code == 303
    # logout needs the CSRF token and ends the session server-side
    csrf, _ = csrf_of(c)
    assert c.post("/annotate/logout", data={}, follow_redirects=False).status_code == 403
    assert c.post("/annotate/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    c3 = TestClient(app)
    c3.cookies.set("mvs_ann_session", value, path="/annotate")
    assert c3.get("/annotate", follow_redirects=False).status_code == 303


def test_login_form_csrf_wrong_password_and_lockout(app_env):
    app = app_env["app"]
    c = TestClient(app)
    r = c.post("/annotate/login", data={"username": "mallory", "password": "mallory-password"})
    assert r.status_code == 403  # no login token: not from our form
    for _ in range(3):
        page = c.get("/annotate/login")
        tok = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
        r = c.post("/annotate/login", data={"username": "mallory", "password": "wrong-password", "login_token": tok})
        assert r.status_code == 401 and "wrong user name or password" in r.text
    page = c.get("/annotate/login")
    tok = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
    r = c.post("/annotate/login", data={"username": "mallory", "password": "mallory-password", "login_token": tok})
    assert r.status_code == 429 and "too many failed logins" in r.text
    assert [a["action"] for a in app_env["store"].audit_log(10) if a["actor"] == "mallory"][:2] == ["login.failed", "login.failed"]


def test_grading_page_escapes_catalog_text_and_hides_gold(app_env):
    c = login(app_env["app"], "alice", "alice-password")
    r = c.get(f"/annotate?batch={app_env['batch'].id}")
    assert r.status_code == 200
    html = r.text
    assert "<script>window.__pwned" not in html and "<img src=x" not in html and "<b>desc</b>" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html and "&lt;b&gt;desc&lt;/b&gt;" in html
    assert "script-src 'self'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"
    for text in ("good", "fair-good", "fair-fair", "bad", "Term match", "Semantically related", "Intent match", "hebe = 田馥甄"):
        assert text in html
    nxt = c.get("/annotate/api/next").json()
    assert "is_gold" not in nxt["task"] and "stratum" not in nxt["task"]
    assert "gold" not in html.lower().replace("golden", "")


def test_json_label_api_csrf_idempotency_and_conflicts(app_env):
    c = login(app_env["app"], "alice", "alice-password")
    csrf, html = csrf_of(c)
    tid = int(re.search(r'data-task-id="(\d+)"', html).group(1))
    url = f"/annotate/api/tasks/{tid}/label"
    body = {"grade": 3, "idempotency_key": "k-1", "aspects": {"term_match": True, "semantic": True, "intent": True}, "note": "MV"}
    assert c.post(url, json=body).status_code == 403  # CSRF header missing
    assert c.post(url, json=body, headers={"X-CSRF-Token": "é".encode("latin-1") * 10}).status_code == 403  # non-ASCII: refused, not a 500
    assert c.post(f"/annotate/api/tasks/{2 ** 70}/label", json=body, headers={"X-CSRF-Token": csrf}).status_code == 400
    assert c.get(f"/annotate/tasks/{2 ** 70}").status_code == 400 and c.get("/annotate?batch=-1").status_code == 400
    assert c.post(url, json=body, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert c.post(url, json=body, headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"}).status_code == 403
    assert c.post(url, content=json.dumps(body), headers={"X-CSRF-Token": csrf, "Content-Type": "text/plain"}).status_code == 415
    assert c.post(url, json={**body, "grade": 9}, headers={"X-CSRF-Token": csrf}).status_code == 400
    assert c.post(url, json={"idempotency_key": "k-0"}, headers={"X-CSRF-Token": csrf}).status_code == 400
    r1 = c.post(url, json=body, headers={"X-CSRF-Token": csrf, "Origin": "http://testserver"})
    assert r1.status_code == 201 and r1.json()["next_url"].startswith("/annotate?batch=")
    r2 = c.post(url, json=body, headers={"X-CSRF-Token": csrf})  # double-click
    assert r2.status_code == 200 and r2.json()["replayed"] and r2.json()["label_id"] == r1.json()["label_id"]
    r3 = c.post(url, json={**body, "idempotency_key": "k-2"}, headers={"X-CSRF-Token": csrf})  # stale second tab
    assert r3.status_code == 409 and r3.json()["detail"]["current_grade"] == 3
    hist = app_env["store"].label_history(tid)
    assert len(hist) == 1 and hist[0]["note"] == "MV" and hist[0]["term_match"] == 1
    # undo through the API: the task is pending again and is shown next
    bid = app_env["batch"].id
    assert c.post("/annotate/api/undo", json={"batch_id": bid, "idempotency_key": "u-1"}).status_code == 403
    u = c.post("/annotate/api/undo", json={"batch_id": bid, "idempotency_key": "u-1"}, headers={"X-CSRF-Token": csrf})
    assert u.status_code == 200 and u.json()["task_id"] == tid and u.json()["url"] == f"/annotate/tasks/{tid}?undone=1"
    assert c.post("/annotate/api/undo", json={"batch_id": bid, "idempotency_key": "u-1"}, headers={"X-CSRF-Token": csrf}).json()["replayed"]
    assert "Undone" in c.get(u.json()["url"]).text
    assert c.get("/annotate/api/next").json()["task"]["task_id"] == tid


def test_annotator_cannot_touch_another_annotators_task_or_admin(app_env):
    store, batch = app_env["store"], app_env["batch"]
    tasks = store.tasks_for_batch(batch.id)
    alice_pairs = {t["pair_id"] for t in tasks if t["annotator"] == "alice"}
    bob_only = [t["id"] for t in tasks if t["annotator"] == "bob" and t["pair_id"] not in alice_pairs]
    bob_task = bob_only[0] if bob_only else next(t["id"] for t in tasks if t["annotator"] == "bob")
    c = login(app_env["app"], "alice", "alice-password")
    csrf, _ = csrf_of(c)
    r = c.get(f"/annotate/tasks/{bob_task}")
    assert r.status_code == 403 and "assigned to another annotator" in r.text
    assert c.get(f"/annotate/api/tasks/{bob_task}").status_code == 403
    r = c.post(f"/annotate/api/tasks/{bob_task}/label", json={"grade": 0, "idempotency_key": "evil"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403
    assert all(h["annotator"] != "alice" for h in store.label_history(bob_task))
    # wrong role: every admin page and endpoint refuses an annotator
    assert c.get("/annotate/admin").status_code == 403
    assert c.get(f"/annotate/admin/batches/{batch.id}").status_code == 403
    assert c.get(f"/annotate/admin/batches/{batch.id}/export").status_code == 403
    assert c.get(f"/annotate/api/admin/batches/{batch.id}/stats").status_code == 403
    assert c.post("/annotate/admin/users", data={"csrf_token": csrf, "name": "eve", "role": "admin", "password": "eve-password"}).status_code == 403
    assert store.get_user(name="eve") is None
    assert c.post("/annotate/admin/pairs/1/adjudicate", data={"csrf_token": csrf, "grade": "3", "batch_id": batch.id}).status_code == 403


def test_admin_forms_batch_creation_adjudication_export(app_env):
    app, store = app_env["app"], app_env["store"]
    c = login(app, "lead", "lead-password")
    csrf, html = csrf_of(c, "/annotate/admin")
    assert "New batch" in html and "alice" in html
    # forms need the CSRF token
    assert c.post("/annotate/admin/users", data={"name": "dora", "password": "dora-password"}).status_code == 403
    r = c.post("/annotate/admin/users", data={"csrf_token": csrf, "name": "dora", "role": "annotator", "password": "dora-password"},
               follow_redirects=False)
    assert r.status_code == 303 and store.get_user(name="dora").role == "annotator"
    assert c.post("/annotate/admin/users", data={"csrf_token": csrf, "name": "dora", "password": "dora-password"}).status_code == 409
    gold = '{"query": "周杰伦 晴天", "video_id": "t-langlang", "grade": 1}\n'.encode()
    r = c.post("/annotate/admin/batches", data={"csrf_token": csrf, "name": "web batch", "strategy": "intent",
                                                  "queries": "周杰伦 晴天\nhebe\n晴天 翻唱\n", "top_k": "3", "per_pair": "2",
                                                  "gold_rate": "0.2", "annotators": ["alice", "dora"]},
               files={"gold_file": ("gold.jsonl", gold, "application/json")}, follow_redirects=False)
    assert r.status_code == 303, r.text
    bid = int(re.search(r"/batches/(\d+)", r.headers["location"]).group(1))
    b = store.get_batch(bid)
    assert b.name == "web batch" and b.strategy == "intent" and b.annotators_per_pair == 2
    pairs = store.pairs_for_batch(bid)
    assert sum(p["is_gold"] for p in pairs) == 1 and {p["stratum"] for p in pairs if not p["is_gold"]} == {"artist_song", "artist", "version"}
    # bad form → the page again with the error, nothing created
    r = c.post("/annotate/admin/batches", data={"csrf_token": csrf, "name": "web batch", "strategy": "search"})
    assert r.status_code == 409 and "already exists" in r.text
    r = c.post("/annotate/admin/batches", data={"csrf_token": csrf, "name": "up", "strategy": "upload"})
    assert r.status_code == 400 and "pairs JSONL" in r.text
    # two annotators disagree → adjudication → export
    alice, dora = store.get_user(name="alice"), store.get_user(name="dora")
    for u, g in ((alice, 3), (dora, 1)):
        while (t := store.next_task(u, bid)) is not None:
            store.submit_label(u, t.id, g, idempotency_key=f"{u.name}-{t.id}")
    page = c.get(f"/annotate/admin/batches/{bid}")
    assert page.status_code == 200 and "Disagreements" in page.text and "Pairwise Cohen" in page.text
    stats = c.get(f"/annotate/api/admin/batches/{bid}/stats").json()
    assert stats["pairs_labelled"] == len(pairs) - 1 and stats["gold_items"] == 2 and stats["disagreements"] == len(pairs) - 1
    assert {a["annotator"]: a["gold_accuracy"] for a in stats["annotators"]} == {"alice": 0.0, "dora": 1.0}
    pid = next(p["id"] for p in pairs if not p["is_gold"])
    r = c.post(f"/annotate/admin/pairs/{pid}/adjudicate", data={"csrf_token": csrf, "grade": "2", "note": "cover", "batch_id": str(bid)},
               follow_redirects=False)
    assert r.status_code == 303 and store.adjudications_for_batch(bid)[pid]["grade"] == 2
    r = c.get(f"/annotate/admin/batches/{bid}/export?method=adjudicated")
    assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment; filename=")
    rows = [json.loads(x) for x in r.text.splitlines()]
    assert len(rows) == 1 and rows[0]["grade"] == 2 and rows[0]["method"] == "adjudicated" and rows[0]["annotators"] == 2
    r = c.get(f"/annotate/admin/batches/{bid}/export?method=majority")
    rows = [json.loads(x) for x in r.text.splitlines()]
    assert len(rows) == len(pairs) - 1 and all(x["tie"] for x in rows if x["method"] == "majority")
    assert c.get(f"/annotate/admin/batches/{bid}/export?method=majority&what=queries").text.count("qid") == 3
    hist = c.get(f"/annotate/admin/batches/{bid}/labels.jsonl").text.splitlines()
    assert len(hist) == 2 * len(pairs)
    assert "batch.export" in c.get("/annotate/admin/audit").text
    # closing the batch stops labelling
    r = c.post(f"/annotate/admin/batches/{bid}/status", data={"csrf_token": csrf, "status": "closed"}, follow_redirects=False)
    assert r.status_code == 303 and store.get_batch(bid).status == "closed"
    # a password reset by the lead ends the user's sessions
    cd = login(app, "dora", "dora-password")
    r = c.post("/annotate/admin/users/dora/password", data={"csrf_token": csrf, "password": "short"})
    assert r.status_code == 400 and "at least 8" in r.text
    r = c.post("/annotate/admin/users/dora/password", data={"csrf_token": csrf, "password": "dora-new-password"}, follow_redirects=False)
    assert r.status_code == 303 and cd.get("/annotate", follow_redirects=False).status_code == 303
    # deactivating a user ends their sessions
    cd = login(app, "dora", "dora-new-password")
    assert cd.get("/annotate").status_code == 200
    r = c.post("/annotate/admin/users/dora/active", data={"csrf_token": csrf, "active": "0"}, follow_redirects=False)
    assert r.status_code == 303 and cd.get("/annotate", follow_redirects=False).status_code == 303


def test_cli_user_batch_stats_export_and_eval(embedded_index, tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "cli.sqlite")
    assert main(["annotate", "user", "add", "lead", "--role", "admin", "--password", "lead-password", "--db", db]) == 0
    monkeypatch.setenv("MVSEARCH_ANNOTATION_PASSWORD", "from-env-password")
    for n in ("ann1", "ann2"):
        assert main(["annotate", "user", "add", n, "--db", db]) == 0
    assert main(["annotate", "user", "add", "ann1", "--db", db]) == 2  # exists
    (tmp_path / "queries.txt").write_text("周杰伦 晴天\nhebe\n", encoding="utf-8")
    (tmp_path / "gold.jsonl").write_text(json.dumps({"query": "周杰伦 晴天", "video_id": "t-langlang", "grade": 1},
                                                    ensure_ascii=False) + "\n", encoding="utf-8")
    rc = main(["annotate", "batch", "create", "--name", "cli", "--strategy", "search", "--queries", str(tmp_path / "queries.txt"),
               "--top-k", "5", "--annotators", "2", "--gold", str(tmp_path / "gold.jsonl"), "--gold-rate", "0.1",
               "--index-dir", str(embedded_index), "--db", db, "--created-by", "lead"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "batch 'cli'" in out and "11 pairs incl. 1 gold" in out
    from search.annotation.store import AnnotationStore

    st = AnnotationStore(db)
    b = st.get_batch(name="cli")
    truth = {"t-qingtian-mv": 3, "t-qingtian-live": 3, "t-qingtian-cover": 2, "t-hebe-1": 3, "t-hebe-2": 3, "t-she": 2}
    pairs = {p["id"]: p for p in st.pairs_for_batch(b.id)}
    for name in ("ann1", "ann2"):
        u = st.get_user(name=name)
        while (t := st.next_task(u, b.id)) is not None:
            st.submit_label(u, t.id, truth.get(pairs[t.pair_id]["video_id"], 0), idempotency_key=f"{name}{t.id}")
    assert main(["annotate", "stats", "--batch", "cli", "--db", db, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["fleiss_kappa"] == 1.0 and stats["percent_agreement"] == 1.0
    assert main(["annotate", "stats", "--batch", "cli", "--db", db]) == 0
    assert "Fleiss" in capsys.readouterr().out
    qrels, queries = tmp_path / "out" / "qrels.jsonl", tmp_path / "out" / "queries.jsonl"
    assert main(["annotate", "export", "--batch", "cli", "--out", str(qrels), "--queries-out", str(queries), "--db", db]) == 0
    assert "10 pairs over 2 queries exported" in capsys.readouterr().out
    rows = [json.loads(x) for x in qrels.read_text(encoding="utf-8").splitlines()]
    assert all(r["annotators"] == 2 and r["method"] == "majority" for r in rows)
    qs, qr = load_judgements(queries, qrels)
    assert len(qs) == 2 and sum(len(v) for v in qr.values()) == 10
    assert main(["eval", "search", "--queries", str(queries), "--qrels", str(qrels), "--index-dir", str(embedded_index), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["queries"] == 2 and ev["judged_pairs"] == 10 and ev["NDCG@10"] > 0.8
    assert main(["annotate", "batch", "list", "--db", db]) == 0 and "cli" in capsys.readouterr().out
    assert main(["annotate", "batch", "close", "cli", "--db", db]) == 0
    assert main(["annotate", "export", "--batch", "nope", "--out", str(qrels), "--db", db]) == 2
    st.close()
