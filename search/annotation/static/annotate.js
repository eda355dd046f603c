// Grading page: keyboard shortcuts and the JSON calls (CSRF token in a header).
// 1–4 grade (1 bad … 4 good), s skip, u undo, n note, t/r/i toggle the sub-dimensions.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";
  var task = document.getElementById("task");
  var done = document.getElementById("done");
  var root = task || done;
  if (!root) return;
  var statusEl = document.getElementById("status");
  var busy = false;
  var aspectsTouched = false;

  function setStatus(msg, isError) {
    if (!statusEl) return;
    statusEl.textContent = msg || "";
    statusEl.className = "status" + (isError ? " error" : "");
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, "Accept": "application/json" },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        return { ok: r.ok, status: r.status, data: data };
      });
    });
  }

  function failed(res) {
    busy = false;
    if (res.status === 401) { window.location.assign("/annotate/login?next=" + encodeURIComponent(location.pathname + location.search)); return; }
    setStatus((res.data && res.data.error) || ("Error " + res.status), true);
  }

  function networkError() {
    busy = false;
    setStatus("Network error — press the key again to retry (a retry is never counted twice).", true);
  }

  function undo() {
    if (busy) return;
    var batch = root.getAttribute("data-batch-id");
    if (!batch) return;
    busy = true;
    setStatus("Undoing…");
    post("/annotate/api/undo", { batch_id: parseInt(batch, 10), idempotency_key: root.getAttribute("data-undo-key") })
      .then(function (res) { if (res.ok) { window.location.assign(res.data.url); } else { failed(res); } }, networkError);
  }

  if (done) {
    var ub = document.getElementById("undo");
    if (ub) ub.addEventListener("click", undo);
    document.addEventListener("keydown", function (e) {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "u" || e.key === "U") { e.preventDefault(); undo(); }
    });
    return;
  }

  var readonly = task.getAttribute("data-readonly") === "1";
  var taskId = task.getAttribute("data-task-id");
  var noteWrap = document.getElementById("note-wrap");
  var note = document.getElementById("note");
  var checks = Array.prototype.slice.call(document.querySelectorAll("input[data-aspect]"));
  checks.forEach(function (c) { c.addEventListener("change", function () { aspectsTouched = true; }); });
  if (task.getAttribute("data-current-label")) {
    // re-grading: keep what was answered before
    aspectsTouched = checks.some(function (c) { return c.checked; });
  }

  function aspects() {
    var out = {};
    checks.forEach(function (c) { out[c.getAttribute("data-aspect")] = aspectsTouched ? c.checked : null; });
    return out;
  }

  function submit(grade, skip) {
    if (busy || readonly) return;
    busy = true;
    document.querySelectorAll(".grade").forEach(function (b) {
      b.classList.toggle("chosen", !skip && b.getAttribute("data-grade") === String(grade));
    });
    setStatus(skip ? "Skipping…" : "Saving…");
    var current = task.getAttribute("data-current-label");
    post("/annotate/api/tasks/" + taskId + "/label", {
      grade: skip ? null : grade,
      skip: !!skip,
      aspects: aspects(),
      note: note ? note.value : "",
      idempotency_key: task.getAttribute("data-key"),
      expected_label_id: current ? parseInt(current, 10) : null
    }).then(function (res) {
      if (res.ok) { window.location.assign(res.data.next_url); return; }
      if (res.status === 409 && res.data && res.data.detail && "current_label_id" in res.data.detail) {
        setStatus("This pair was already labelled in another tab — moving on.", true);
        setTimeout(function () { window.location.assign("/annotate?batch=" + task.getAttribute("data-batch-id")); }, 900);
        return;
      }
      failed(res);
    }, networkError);
  }

  function openNote() {
    if (!noteWrap || !note) return;
    noteWrap.hidden = false;
    note.focus();
  }

  document.querySelectorAll(".grade, .qgrade").forEach(function (b) {
    b.addEventListener("click", function () { submit(parseInt(b.getAttribute("data-grade"), 10), false); });
  });
  document.querySelectorAll(".qskip").forEach(function (b) {
    b.addEventListener("click", function () { submit(null, true); });
  });
  var skipBtn = document.getElementById("skip");
  if (skipBtn) skipBtn.addEventListener("click", function () { submit(null, true); });
  var undoBtn = document.getElementById("undo");
  if (undoBtn) undoBtn.addEventListener("click", undo);
  var noteBtn = document.getElementById("note-btn");
  if (noteBtn) noteBtn.addEventListener("click", openNote);

  var aspectKeys = { t: "term_match", r: "semantic", i: "intent" };

  document.addEventListener("keydown", function (e) {
    var tag = (e.target && e.target.tagName) || "";
    if (tag === "TEXTAREA" || tag === "INPUT" || tag === "SELECT") {
      if (e.key === "Escape") { e.target.blur(); e.preventDefault(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    var k = e.key;
    if (k >= "1" && k <= "4") { e.preventDefault(); submit(parseInt(k, 10) - 1, false); return; }
    var lk = k.toLowerCase();
    if (lk === "s") { e.preventDefault(); submit(null, true); return; }
    if (lk === "u") { e.preventDefault(); undo(); return; }
    if (lk === "n") { e.preventDefault(); openNote(); return; }
    if (aspectKeys[lk] && !readonly) {
      var box = document.getElementById("aspect-" + aspectKeys[lk]);
      if (box) { e.preventDefault(); box.checked = !box.checked; aspectsTouched = true; }
    }
  });
})();
