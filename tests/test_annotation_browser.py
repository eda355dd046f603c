"""The annotation tool in a real headless Chromium (Debian `chromium` + `chromium-driver`,
driven by Selenium): log in, grade with the keyboard, undo, skip, note, a double key
press, another annotator's task and the admin page as an annotator (refused), a second
annotator on a phone-sized screen, adjudication and the export download — then the
exported set is evaluated with `evaluate_search`, closing the round trip.

Skipped with a reason where Chromium is missing locally; a failure under CI=true.
Screenshots go to $ANNOTATION_SHOTS_DIR (default: a pytest temp dir).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import require_or_skip
from search.annotation.service import BatchRequest
from search.annotation.store import PairSpec
from search.api import create_app
from search.config import load_config
from search.evaluation import evaluate_search, load_judgements
from search.pipeline import SearchPipeline

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
LAPTOP, PHONE = (1366, 768), (390, 844)
# the grades the annotators give (SPEC examples: 周杰伦 晴天 wants Jay Chou's 晴天, hebe = 田馥甄); other videos of the
# generated catalog that the search returns get `bad`: the round trip checks that what is pressed is what is exported
TRUTH = {("周杰伦 晴天", "t-qingtian-mv"): 3, ("周杰伦 晴天", "t-qingtian-live"): 3, ("周杰伦 晴天", "t-qingtian-cover"): 2,
         ("周杰伦 晴天", "t-langlang"): 1, ("hebe", "t-hebe-1"): 3, ("hebe", "t-hebe-2"): 3, ("hebe", "t-she"): 2}


def oracle(query: str, video_id: str) -> int:
    return TRUTH.get((query, video_id), 0)


XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>晴天 MV'


def _chromium_ok() -> tuple[bool, str]:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False, "selenium is not installed (pip install -e '.[test]')"
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return False, "needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): bash scripts/setup.sh test"
    return True, ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def shots_dir(tmp_path_factory) -> Path:
    d = Path(os.environ.get("ANNOTATION_SHOTS_DIR") or tmp_path_factory.mktemp("shots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def env(embedded_index, tmp_path_factory):
    ok, reason = _chromium_ok()
    require_or_skip(ok, reason)
    import uvicorn

    d = tmp_path_factory.mktemp("annbrowser")
    cfg = load_config(None, {"engine": {"kind": "embedded", "index_dir": str(embedded_index)},
                             "search": {"reference_time": "2026-11-01T12:00:00+08:00"}, "annotation": {"db_path": str(d / "a.sqlite")}})
    pipe = SearchPipeline(cfg)
    app = create_app(pipe)
    st = app.state.annotation
    store = st.store
    lead = store.create_user("lead", "lead-password", "admin")
    for n in ("alice", "bob"):
        store.create_user(n, f"{n}-password")
    gold = json.dumps({"query": "周杰伦 晴天", "video_id": "t-langlang", "grade": 1}, ensure_ascii=False).encode()
    res = st.service.create_batch(BatchRequest("round trip", "search", queries=["周杰伦 晴天", "hebe"], top_k=3, gold=gold,
                                               gold_rate=0.15, per_pair=2), actor=lead)
    store.create_batch("xss", "upload", [PairSpec("晴天", "t-xss", {"video_id": "t-xss", "title": XSS, "description": "<b>x</b>",
                                                                  "tags": ["<i>t</i>"], "category": "mv", "duration_s": 61})],
                       [store.get_user(name="alice")], per_pair=1, actor=lead)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    t0 = time.time()
    while not server.started:
        assert time.time() - t0 < 20, "server did not start"
        time.sleep(0.05)
    yield {"base": f"http://127.0.0.1:{port}", "store": store, "batch": res.batch, "pipe": pipe, "dir": d}
    server.should_exit = True
    th.join(10)
    st.close()
    pipe.close()


@pytest.fixture(scope="module")
def driver(env):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = env["dir"] / "downloads"
    downloads.mkdir()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    o = webdriver.ChromeOptions()
    o.binary_location = str(CHROMIUM)
    args = ["--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            f"--window-size={LAPTOP[0]},{LAPTOP[1]}"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    for a in args:
        o.add_argument(a)
    o.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
    drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=o)
    drv.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    drv.downloads = downloads
    viewport(drv, *LAPTOP)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


def viewport(drv, w: int, h: int) -> None:
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": w < 600})


def shot(drv, path: Path, size: tuple[int, int]) -> None:
    viewport(drv, *size)
    time.sleep(0.15)
    drv.save_screenshot(str(path))
    viewport(drv, *LAPTOP)


def login(drv, base: str, name: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    drv.delete_all_cookies()
    drv.get(base + "/annotate/login")
    drv.find_element(By.ID, "username").send_keys(name)
    drv.find_element(By.ID, "password").send_keys(password)
    drv.find_element(By.ID, "login-submit").click()
    wait(drv, lambda d: "/annotate/login" not in d.current_url or d.find_elements(By.CSS_SELECTOR, ".alert.error"))


def wait(drv, cond, timeout: float = 10):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout, ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)).until(cond)


def current_task(drv) -> dict | None:
    """The task on screen (id, query, video id), or None on the 'done' page."""
    return drv.execute_script("""
        var t = document.getElementById('task');
        if (!t) return null;
        return {id: t.getAttribute('data-task-id'), query: document.getElementById('query').textContent,
                vid: document.querySelector('.vid').textContent.trim(), label: t.getAttribute('data-current-label')};""")


def press(drv, key: str, old_id: str | None, expect_change: bool = True) -> dict | None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(drv).send_keys(key).perform()
    if expect_change:
        wait(drv, lambda d: (current_task(d) or {}).get("id") != old_id and d.execute_script("return document.readyState") == "complete")
    return current_task(drv)


def test_annotator_grades_with_keyboard_undo_skip_note(env, driver, shots_dir):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    base, store, batch = env["base"], env["store"], env["batch"]
    login(driver, base, "alice", "wrong-password")
    assert "wrong user name or password" in driver.find_element(By.CSS_SELECTOR, ".alert.error").text
    login(driver, base, "alice", "alice-password")
    driver.get(f"{base}/annotate?batch={batch.id}")
    t = current_task(driver)
    assert t and driver.find_element(By.ID, "progress-text").text.startswith("0 / 7")
    # the scale with definitions and examples and the three sub-dimensions are on the page
    scale = driver.find_element(By.CSS_SELECTOR, ".scale-pane").text
    for s in ("good", "fair-good", "fair-fair", "bad", "True aliases count as a term match", "朗朗晴天"):
        assert s in scale
    assert len(driver.find_elements(By.CSS_SELECTOR, "input[data-aspect]")) == 3
    # layout: laptop → the scale beside the task, all four grades visible without scrolling; CJK font present
    viewport(driver, *LAPTOP)
    geo = driver.execute_script("""
        var a = document.querySelector('.task-pane').getBoundingClientRect(), b = document.querySelector('.scale-pane').getBoundingClientRect();
        var g = document.getElementById('grade-0').getBoundingClientRect();
        return {ax: a.left, bx: b.left, gbottom: g.bottom, vh: innerHeight, sw: document.documentElement.scrollWidth,
                cjk: document.fonts.check("16px 'Noto Sans CJK SC'")};""")
    assert geo["bx"] > geo["ax"] + 500 and geo["gbottom"] <= geo["vh"] and geo["sw"] <= LAPTOP[0]
    assert geo["cjk"], "no CJK font (fonts-noto-cjk): Chinese titles would not render"
    shot(driver, shots_dir / "grading_laptop.png", LAPTOP)
    shot(driver, shots_dir / "grading_phone.png", PHONE)

    graded: dict[str, int] = {}

    def grade_for(task):
        return oracle(task["query"], task["vid"])

    # 1. grade with the keyboard (key = grade + 1)
    first = t
    t = press(driver, str(grade_for(first) + 1), first["id"])
    assert driver.find_element(By.ID, "progress-text").text.startswith("1 / 7")
    # 2. undo brings the same task back, pending again
    t2 = press(driver, "u", t["id"])
    assert t2["id"] == first["id"] and "undone=1" in driver.current_url and not t2["label"]
    assert driver.find_element(By.ID, "undone-msg").is_displayed()
    assert driver.find_element(By.ID, "progress-text").text.startswith("0 / 7")
    # 3. a note (n), a sub-dimension (t), then a double key press: one label only
    ActionChains(driver).send_keys("n").perform()
    note = driver.find_element(By.ID, "note")
    wait(driver, lambda d: d.switch_to.active_element == note)
    note.send_keys("1234 typed in the note are not grades", Keys.ESCAPE)
    ActionChains(driver).send_keys("t").perform()
    assert driver.find_element(By.ID, "aspect-term_match").is_selected()
    g = grade_for(first)
    ActionChains(driver).send_keys(str(g + 1)).send_keys(str(g + 1)).perform()
    wait(driver, lambda d: (current_task(d) or {}).get("id") != first["id"])
    graded[first["id"]] = g
    hist = store.label_history(int(first["id"]))
    assert [(h["action"], h["grade"]) for h in hist] == [("grade", g), ("undo", None), ("grade", g)]
    assert hist[-1]["note"] == "1234 typed in the note are not grades" and hist[-1]["term_match"] == 1 and hist[-1]["intent"] == 0
    # 4. skip (s): the task comes back after the others
    t = current_task(driver)
    skipped = t["id"]
    t = press(driver, "s", skipped)
    order = []
    while t is not None:
        order.append(t["id"])
        graded[t["id"]] = grade_for(t)
        t = press(driver, str(graded[t["id"]] + 1), t["id"])
    assert order[-1] == skipped and len(graded) == 7
    assert "is done" in driver.find_element(By.TAG_NAME, "h1").text
    alice = store.get_user(name="alice")
    cur = {str(r["task_id"]): r["grade"] for r in store.labels_for_batch(batch.id) if r["annotator"] == "alice"}
    assert cur == graded
    assert len([h for h in store.labels_for_batch(batch.id, current_only=False) if h["annotator"] == "alice"]) == 10  # 7 + undo + its label + skip
    assert store.progress(alice, batch.id) == {"total": 7, "done": 7, "skipped": 0, "pending": 0}


def test_catalog_text_is_not_html(env, driver):
    from selenium.webdriver.common.by import By

    xss = next(b for b in env["store"].list_batches() if b["batch"].name == "xss")["batch"]
    driver.get(f"{env['base']}/annotate?batch={xss.id}")
    title = driver.find_element(By.ID, "video-title").text
    assert title == XSS
    assert driver.find_element(By.ID, "video-description").text == "<b>x</b>"
    assert not driver.find_elements(By.CSS_SELECTOR, ".vtitle img, .vtitle script, .vdesc b")
    assert driver.execute_script("return window.__pwned === undefined")


def test_annotator_is_refused_other_tasks_and_admin(env, driver):
    from selenium.webdriver.common.by import By

    store, base = env["store"], env["base"]
    bob_task = next(t["id"] for t in store.tasks_for_batch(env["batch"].id) if t["annotator"] == "bob")
    driver.get(f"{base}/annotate/tasks/{bob_task}")
    assert "Not allowed" in driver.find_element(By.TAG_NAME, "h1").text
    assert "assigned to another annotator" in driver.find_element(By.ID, "error-message").text
    # even a hand-made request with a valid CSRF token is refused
    driver.get(f"{base}/annotate")
    status = driver.execute_async_script("""
        var done = arguments[arguments.length - 1];
        fetch('/annotate/api/tasks/%d/label', {method: 'POST', credentials: 'same-origin',
              headers: {'Content-Type': 'application/json', 'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content},
              body: JSON.stringify({grade: 0, idempotency_key: 'sneaky'})}).then(function (r) { done(r.status); });""" % bob_task)
    assert status == 403 and not store.label_history(bob_task)
    driver.get(f"{base}/annotate/admin")
    assert "Not allowed" in driver.find_element(By.TAG_NAME, "h1").text
    assert "for admins" in driver.find_element(By.ID, "error-message").text
    assert not driver.find_elements(By.ID, "batch-form")


def test_second_annotator_on_a_phone(env, driver):
    """bob works on a phone-sized screen with the bottom grade bar; he disagrees with
    alice once: the first `good` pair he sees he grades fair-good."""
    from selenium.webdriver.common.by import By

    store, batch = env["store"], env["batch"]
    login(driver, env["base"], "bob", "bob-password")
    viewport(driver, *PHONE)
    try:
        driver.get(f"{env['base']}/annotate?batch={batch.id}")
        geo = driver.execute_script("""var q = document.querySelector('.quickgrades').getBoundingClientRect();
            return {sw: document.documentElement.scrollWidth, qtop: q.top, qbottom: q.bottom, vh: innerHeight};""")
        assert geo["sw"] <= PHONE[0] and geo["qbottom"] <= geo["vh"] + 1 and geo["qtop"] > geo["vh"] - 120  # bar pinned at the bottom
        t = current_task(driver)
        n, disagreed = 0, None
        while t is not None:
            g = oracle(t["query"], t["vid"])
            if g == 3 and disagreed is None:
                g, disagreed = 2, (t["query"], t["vid"])
            driver.find_element(By.CSS_SELECTOR, f".quickgrades .qgrade[data-grade='{g}']").click()
            wait(driver, lambda d, old=t["id"]: (current_task(d) or {}).get("id") != old)
            t = current_task(driver)
            n += 1
        assert n == 7 and disagreed is not None
    finally:
        viewport(driver, *LAPTOP)
    assert len(store.labels_for_batch(batch.id)) == 14
    env["disagreed"] = disagreed


def test_admin_adjudicates_exports_and_the_set_evaluates(env, driver, shots_dir):
    from selenium.webdriver.common.by import By

    store, batch, base = env["store"], env["batch"], env["base"]
    login(driver, base, "lead", "lead-password")
    driver.get(f"{base}/annotate/admin")
    assert driver.find_element(By.ID, "batch-form").is_displayed()
    shot(driver, shots_dir / "admin_laptop.png", LAPTOP)
    shot(driver, shots_dir / "admin_phone.png", PHONE)
    driver.find_element(By.LINK_TEXT, "round trip").click()
    wait(driver, lambda d: d.find_elements(By.ID, "batch-title"))
    assert driver.find_element(By.ID, "gold-acc").text == "100%"
    assert driver.find_element(By.ID, "fleiss").text not in ("", "—")
    disagreement = driver.find_elements(By.CSS_SELECTOR, ".disagreement")
    query, vid = env["disagreed"]
    assert len(disagreement) == 1 and query in disagreement[0].text
    shot(driver, shots_dir / "batch_laptop.png", LAPTOP)
    # adjudicate: the lead sides with alice (good)
    disagreement[0].find_element(By.CSS_SELECTOR, "input[name=grade][value='3']").click()
    disagreement[0].find_element(By.CSS_SELECTOR, "input[name=note]").send_keys("the artist's own performance of the song")
    disagreement[0].find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, lambda d: "adjudicated" in d.current_url)
    assert "Adjudicated: 3 good by lead" in driver.find_element(By.ID, "adjudication").text
    # export download (majority, adjudications win)
    driver.find_element(By.ID, "export-majority").click()
    wait(driver, lambda d: [p for p in d.downloads.glob("*.qrels.jsonl")], timeout=15)
    path = next(driver.downloads.glob("*.qrels.jsonl"))
    wait(driver, lambda d: path.stat().st_size > 0 and not list(d.downloads.glob("*.crdownload")))
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert path.name == "round_trip.majority.qrels.jsonl"
    pairs = [p for p in store.pairs_for_batch(batch.id) if not p["is_gold"]]
    assert {(r["query"], r["video_id"]): r["grade"] for r in rows} == {(p["query"], p["video_id"]): oracle(p["query"], p["video_id"])
                                                                      for p in pairs}
    for r in rows:
        assert r["annotators"] == 2 and r["method"] in ("majority", "adjudicated") and r["qid"].startswith("q")
    assert [r["method"] for r in rows if (r["query"], r["video_id"]) == (query, vid)] == ["adjudicated"]
    # round trip: the exported set evaluates the pipeline exactly like the truth it encodes
    queries, qrels = load_judgements(path, path)
    rep = evaluate_search(env["pipe"], queries, qrels, progress=False)
    truth_q = {r["qid"]: r["query"] for r in rows}
    truth: dict[str, dict[str, int]] = {}
    for r in rows:
        truth.setdefault(r["qid"], {})[r["video_id"]] = oracle(r["query"], r["video_id"])
    ref = evaluate_search(env["pipe"], truth_q, truth, progress=False)
    assert rep.summary() == ref.summary() and rep.queries == 2 and rep.judged_pairs == len(pairs) == 6
    assert rep.mrr == 1.0  # the pipeline puts a good video first for both queries
