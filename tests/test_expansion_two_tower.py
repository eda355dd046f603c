"""Two-tower vector recall: tiny training on a toy click set beats the untrained towers on
retrieval over the toy catalog; the saved numpy embedder reloads, encodes a query fast, and
an index built with it serves the vector route with the two-tower embedder."""
from __future__ import annotations

import time

import numpy as np
import pytest


ARTISTS = ["周杰伦", "田馥甄", "林俊杰", "邓紫棋", "五月天", "陈奕迅", "王菲", "张学友"]
ALIAS = {"周杰伦": "jay chou", "田馥甄": "hebe", "林俊杰": "jj lin", "邓紫棋": "gem", "五月天": "mayday",
         "陈奕迅": "eason", "王菲": "faye wong", "张学友": "jacky cheung"}
SONGS = ["晴天", "小幸运", "江南", "光年之外", "倔强", "十年", "红豆", "吻别"]


def _toy():
    from search.expansion.two_tower import ClickData

    texts, pairs = {}, []
    for i, a in enumerate(ARTISTS):
        for j, s in enumerate(SONGS):
            vid = f"v{i}{j}"
            texts[vid] = f"{a} {s} 现场 live"
            pairs += [(f"{ALIAS[a]} {s}", vid)] * 3 + [(f"{a} {s}", vid)]
    return texts, ClickData(pairs, {}, {})


def _recall_at_1(emb, texts, clicks):
    from search.expansion.two_tower import retrieval_recall

    vids = sorted(texts)
    pos = {v: i for i, v in enumerate(vids)}
    qs = sorted({q for q, _ in clicks.pairs})
    tgt = {}
    for q, v in clicks.pairs:
        tgt.setdefault(q, set()).add(pos[v])
    return retrieval_recall(emb.encode_queries(qs), emb.encode_videos([texts[v] for v in vids]), [tgt[q] for q in qs], ks=(1,))["recall@1"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from search.expansion.bert import build_vocab

    texts, clicks = _toy()
    d = tmp_path_factory.mktemp("tok")
    build_vocab(list(texts.values()) + [q for q, _ in clicks.pairs], d, vocab_size=400)
    return d


def test_training_improves_retrieval(tokenizer_dir, tmp_path):
    from search.expansion.trainer import TrainConfig
    from search.expansion.two_tower import TwoTowerConfig, TwoTowerEmbedder, train_two_tower

    texts, clicks = _toy()
    cfg = TwoTowerConfig(dims=16, embed_dim=32, hidden=32, buckets=512, batch_size=32)
    untrained = tmp_path / "tt0"
    train_two_tower(clicks, texts, None, untrained, cfg, TrainConfig(steps=1, lr=1e-9, show_progress=False),
                    tokenizer_dir=tokenizer_dir, log=lambda *_: None)
    out = tmp_path / "tt"
    cfg = TwoTowerConfig(dims=16, embed_dim=32, hidden=32, buckets=512, batch_size=32)
    train_two_tower(clicks, texts, None, out, cfg, TrainConfig(steps=150, lr=5e-3, show_progress=False, checkpoint_every=1000),
                    tokenizer_dir=tokenizer_dir, log=lambda *_: None)
    before = _recall_at_1(TwoTowerEmbedder.load(untrained), texts, clicks)
    emb = TwoTowerEmbedder.load(out)
    after = _recall_at_1(emb, texts, clicks)
    assert after > before + 0.3, (before, after)
    assert after >= 0.7
    v = emb.encode_tokens(["hebe", "小幸运"])
    assert v.shape == (16,) and abs(float(np.linalg.norm(v)) - 1) < 1e-4
    # the query vector is computed online: well under 3 ms on one core
    t = time.perf_counter()
    for _ in range(200):
        emb.encode_query("jay chou 晴天 live")
    assert (time.perf_counter() - t) / 200 * 1000 < 3.0


def test_index_built_with_two_tower_serves_vector_route(tokenizer_dir, catalog_path, tmp_path):
    from search.config import load_config
    from search.expansion.trainer import TrainConfig
    from search.expansion.two_tower import TwoTowerConfig, train_two_tower
    from search.indexer import build_index, current_bundle, read_manifest
    from search.pipeline import SearchPipeline
    from search.pipeline import SearchRequest

    texts, clicks = _toy()
    out = tmp_path / "tt64"
    train_two_tower(clicks, texts, None, out, TwoTowerConfig(dims=64, embed_dim=32, hidden=32, buckets=512, batch_size=32),
                    TrainConfig(steps=20, lr=5e-3, show_progress=False), tokenizer_dir=tokenizer_dir, log=lambda *_: None)
    idx = tmp_path / "index"
    build_index(catalog_path, idx, show_progress=False, vector_model=out)
    b = current_bundle(idx)
    assert read_manifest(b)["embedder"] == "two_tower" and (b / "two_tower" / "two_tower.npz").exists()
    pipe = SearchPipeline(load_config(None, {"engine": {"kind": "embedded", "index_dir": str(idx)}}))
    try:
        assert pipe.embedder.name == "two_tower"
        res = pipe.search(SearchRequest(q="周杰伦 晴天", explain=True))
        vec = res.stages["recall"]["routes"]["vector"]
        assert vec["embedder"] == "two_tower" and vec["hits"] > 0
    finally:
        pipe.close()


def test_wrong_dims_rejected(tokenizer_dir, catalog_path, tmp_path):
    from search.expansion.trainer import TrainConfig
    from search.expansion.two_tower import TwoTowerConfig, train_two_tower
    from search.indexer import build_index

    texts, clicks = _toy()
    out = tmp_path / "tt16"
    train_two_tower(clicks, texts, None, out, TwoTowerConfig(dims=16, embed_dim=32, hidden=32, buckets=512, batch_size=32),
                    TrainConfig(steps=1, show_progress=False), tokenizer_dir=tokenizer_dir, log=lambda *_: None)
    with pytest.raises(ValueError, match="vectors.dims"):
        build_index(catalog_path, tmp_path / "index", show_progress=False, vector_model=out)
