import pytest
from fastapi.testclient import TestClient

from search.api import create_app


@pytest.fixture(scope="module")
def client(pipeline):
    return TestClient(create_app(pipeline))


def test_search_returns_typed_results(client):
    r = client.get("/search", params={"q": "周杰伦 晴天", "user_id": "u1", "size": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["query"]["normalized"] == "周杰伦 晴天"
    assert [t["text"] for t in body["query"]["tokens"]] == ["周杰伦", "晴天"]
    top = body["results"][0]
    assert top["video_id"] in ("t-qingtian-mv", "t-qingtian-live") and top["rank"] == 1
    assert top["relevance_grade"] == 3 and "explain" not in top


def test_explain(client):
    r = client.get("/search", params={"q": "hebe", "explain": "true"})
    res = r.json()["results"][0]
    assert {"recall", "relevance", "ranking", "rerank"} <= set(res["explain"])
    assert "stages" in r.json()


@pytest.mark.parametrize("params,status", [
    ({"q": ""}, 400),
    ({"q": "   "}, 400),
    ({"q": "x" * 10001}, 400),
    ({"q": "晴天", "page": 0}, 400),
    ({"q": "晴天", "page": "abc"}, 400),
    ({"q": "晴天", "size": 0}, 400),
    ({"q": "晴天", "size": 51}, 400),
    ({"q": "晴天", "size": 50, "page": 21}, 400),
    ({}, 400),
])
def test_bad_input_is_a_4xx_with_a_message(client, params, status):
    r = client.get("/search", params=params)
    assert r.status_code == status
    assert r.json().get("detail") or r.json().get("error")


@pytest.mark.parametrize("q", ["x" * 10000, '"*:()[]{}^~\\/', "\x01\x02周杰伦", "😂😂😂", "周杰伦 OR 1=1; DROP TABLE", "\\u0000"])
def test_hostile_queries_answer_200(client, q):
    r = client.get("/search", params={"q": q})
    assert r.status_code == 200, r.text


def test_videos_and_health(client):
    r = client.get("/videos/t-gem")
    assert r.status_code == 200 and r.json()["title"].startswith("G.E.M.")
    assert client.get("/videos/nope").status_code == 404
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["engine"]["reachable"] and h["engine"]["index_version"]
    assert h["engine"]["models_loaded"]["embedder"] == "lsa"


def test_openapi_documents_the_search_response(client):
    spec = client.get("/openapi.json").json()
    assert "/search" in spec["paths"] and "SearchResponse" in spec["components"]["schemas"]
