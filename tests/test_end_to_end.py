"""End to end through the real commands: generate a catalog, build the index (which fits the
baseline embedder), start `mvsearch serve` as a process, and answer queries over HTTP."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mvsearch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_catalog_to_api(tmp_path):
    cat = tmp_path / "docs.jsonl"
    r = _mvsearch("catalog", "demo", "--out", str(cat), "--size", "1500", "--seed", "5", "--quiet")
    assert r.returncode == 0, r.stderr
    with open(cat, "a", encoding="utf-8") as f:
        f.write((ROOT / "tests/fixtures/mini_catalog.jsonl").read_text(encoding="utf-8"))
        f.write("this line is not json\n")
    r = _mvsearch("index", "build", "--catalog", str(cat), "--index-dir", str(tmp_path / "ix"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "1 malformed lines" in r.stdout and "line 1515" in r.stdout

    # tiny models, trained by the same commands as the full ones
    r = _mvsearch("qu", "train-ner", "--catalog", str(cat), "--out", str(tmp_path / "models/ner.pt"), "--index-dir", str(tmp_path / "ix"),
                  "--catalog-titles", "600", "--kb-queries", "600", "--epochs", "1", "--cais", "", "--quiet")
    assert r.returncode == 0, r.stderr
    config = tmp_path / "serve.toml"
    config.write_text(f'[engine]\nindex_dir = "{tmp_path / "ix"}"\n[understanding.params]\nner_model = "{tmp_path / "models/ner.pt"}"\n',
                      encoding="utf-8")

    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "serve", "--config", str(config), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError("server did not come up")
        r = httpx.get(f"{base}/search", params={"q": "周杰伦 晴天", "explain": "true"}, timeout=10)
        assert r.status_code == 200
        # a one-epoch tagger reads what it reads; what must hold is that it took part
        ents = r.json()["query"]["entities"]
        assert ents and {e["source"] for e in ents} & {"tagger", "both"}
        assert r.json()["stages"]["understanding"]["steps"].count("ner") == 1
        top = r.json()["results"][0]
        assert top["video_id"] in ("t-qingtian-mv", "t-qingtian-live") and top["explain"]["relevance"]["grade"] == 3
        r = httpx.get(f"{base}/search", params={"q": "zjl 晴天"}, timeout=10)
        assert r.status_code == 200 and r.json()["results"]
        assert httpx.get(f"{base}/search", params={"q": ""}, timeout=10).status_code == 400
        assert httpx.get(f"{base}/videos/t-gem", timeout=10).json()["video_id"] == "t-gem"
        r = _mvsearch("query", "hebe", "--index-dir", str(tmp_path / "ix"), "--json")
        assert r.returncode == 0 and '"t-hebe-1"' in r.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=20)
