"""Aspect relevance model on a toy catalog: shapes, learning intent match from entity-swapped
hard negatives, exact match over unrelated, persistence and precomputed item vectors."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from query_understanding import Entity, QueryToken, UnderstoodQuery
from query_understanding.tokenize import Tokenizer
from relevance.aspect_data import TIER_TARGET, swap_entity, tier_pairs, PairStats, TierParams, coec
from relevance.aspect_model import (ASPECT_PAIRS, ITEM_ASPECTS, QUERY_ASPECTS, AspectBundle, AspectConfig, AspectScorer,
                                    encode_items, item_aspects, query_aspects, units)
from relevance.aspect_train import TrainParams, build_vocab, encode_examples, fit

ARTISTS = ["周杰伦", "林俊杰", "田馥甄", "陈奕迅", "邓紫棋", "薛之谦"]
SONGS = ["晴天", "江南", "小幸运", "十年", "光年之外", "演员", "稻香", "修炼爱情"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("dict") / "dictionary.txt"
    d.write_text("".join(f"{w} 50000 artist\n" for w in ARTISTS) + "".join(f"{w} 25000 song\n" for w in SONGS), encoding="utf-8")
    return Tokenizer(d)


def doc(artist: str, song: str, vid: str | None = None) -> dict:
    return {"video_id": vid or f"{artist}-{song}", "title": f"{artist} {song} 官方MV", "artists": [artist], "songs": [song],
            "tags": [artist, song], "uploader": "音乐台", "category": "mv"}


def query(artist: str, song: str) -> UnderstoodQuery:
    toks = [QueryToken(artist, 1.0, "artist"), QueryToken(song, 1.0, "song")]
    return UnderstoodQuery(raw=f"{artist} {song}", normalized=f"{artist} {song}", tokens=toks,
                           entities=[Entity(artist, "artist", 0, 1), Entity(song, "song", 1, 2)])


@pytest.fixture(scope="module")
def trained(tok):
    """A tiny model trained a few seconds on (artist song) queries: the video of that artist and
    song is a positive; the same song by another artist and another song by the same artist
    (entity swaps of the positive) and random videos are negatives. 6 combos are held out."""
    torch.set_num_threads(1)
    combos = list(itertools.product(ARTISTS, SONGS))
    rng = random.Random(0)
    rng.shuffle(combos)
    held, train_combos = combos[:6], combos[6:]
    docs = {f"{a}-{s}": doc(a, s) for a, s in combos}
    q_list, i_list, qi, ii, y = [], [], [], [], []

    def add(q: UnderstoodQuery, d: dict, target: float) -> None:
        q_list.append(query_aspects(q, tok))
        i_list.append(item_aspects(d, tok))
        qi.append(len(q_list) - 1)
        ii.append(len(i_list) - 1)
        y.append(target)

    for a, s in train_combos:
        q = query(a, s)
        pos = docs[f"{a}-{s}"]
        add(q, pos, TIER_TARGET["high"])
        other_a = rng.choice([x for x in ARTISTS if x != a])
        other_s = rng.choice([x for x in SONGS if x != s])
        add(q, swap_entity(pos, "artists", a, other_a), TIER_TARGET["hard_negative"])
        add(q, swap_entity(pos, "songs", s, other_s), TIER_TARGET["hard_negative"])
        add(q, docs[rng.choice([k for k in docs if a not in k and s not in k])], TIER_TARGET["easy_negative"])
    vocab = build_vocab(q_list, i_list, min_count=1)
    data = encode_examples(vocab, q_list, i_list, qi, ii, y)
    bundle = AspectBundle.new(vocab, AspectConfig(emb_dim=32, dim=16, hidden=32, dropout=0.0), seed=0)
    fit(bundle, data, TrainParams(epochs=15, batch_size=32, lr=5e-3, seed=0, checkpoint_every=0, progress=False))
    return bundle, docs, held


def test_units_words_then_characters():
    assert units(["周杰伦", "mv"]) == ["周杰伦", "mv", "#周", "#杰", "#伦"]


def test_shapes(tok):
    bundle = AspectBundle.new(build_vocab([query_aspects(query("周杰伦", "晴天"), tok)], [item_aspects(doc("周杰伦", "晴天"), tok)], 1))
    m = bundle.model
    q = torch.randint(1, bundle.vocab.size, (3, len(QUERY_ASPECTS), 24))
    i = torch.randint(1, bundle.vocab.size, (3, len(ITEM_ASPECTS), 40))
    i[:, 1] = 0  # an empty aspect: masked out of the pooling
    qv, qm = m.encode_query(q)
    iv, im = m.encode_item(i)
    k, d = len(m.cfg.kernels), m.cfg.dim
    assert qv.shape == (3, len(QUERY_ASPECTS), k, d) and iv.shape == (3, len(ITEM_ASPECTS), k, d)
    assert im[:, 1].sum() == 0 and bool(im[:, 0].all())
    assert torch.all(iv[:, 1] == 0)
    logit, pairs = m.interact(qv[:1], qm[:1], iv, im, return_pairs=True)  # one query broadcast over 3 items
    assert logit.shape == (3,) and pairs.shape == (3, len(ASPECT_PAIRS))
    assert torch.isinf(pairs[:, ASPECT_PAIRS.index(("artist", "artist"))]).all()  # artist pair invalid: item artist empty
    assert m(q, i).shape == (3,)
    # the serving fast path (one query, absent query aspects skipped, q folded into weights)
    # gives the same logits as the general interaction
    m.eval()
    with torch.no_grad():
        q1 = q[:1].clone()
        q1[0, 2:] = 0
        qv1, qm1 = m.encode_query(q1)
        fast = m.interact(qv1, qm1, iv, im)
        general, _ = m.interact(qv1, qm1, iv, im, return_pairs=True)
    torch.testing.assert_close(fast, general, atol=1e-5, rtol=1e-5)


def test_entity_swapped_negative_scores_below_positive(trained, tok, tmp_path):
    bundle, docs, held = trained
    bundle.save(tmp_path)
    sc = AspectScorer(tmp_path, tok)
    wins, total = 0, 0
    for a, s in held:  # combos never seen in training
        pos = docs[f"{a}-{s}"]
        negs = [swap_entity(pos, "artists", a, next(x for x in ARTISTS if x != a)),
                swap_entity(pos, "songs", s, next(x for x in SONGS if x != s))]
        scores = sc.score_query(query(a, s), [pos] + negs)
        wins += int(scores[0] > scores[1]) + int(scores[0] > scores[2])
        total += 2
    assert wins / total >= 0.75, f"positive above its entity swap in only {wins}/{total} held-out cases"


def test_exact_match_beats_unrelated(trained, tok, tmp_path):
    bundle, docs, held = trained
    bundle.save(tmp_path)
    sc = AspectScorer(tmp_path, tok)
    for a, s in held:
        unrelated = next(docs[k] for k in docs if a not in k and s not in k)
        exact, other = sc.score_query(query(a, s), [docs[f"{a}-{s}"], unrelated])
        assert exact > other, (a, s, exact, other)


def test_model_round_trip_and_precomputed_items(trained, tok, tmp_path):
    bundle, docs, held = trained
    d1 = tmp_path / "m"
    bundle.save(d1)
    loaded = AspectBundle.load(d1)
    assert loaded.vocab.words == bundle.vocab.words
    for k, v in bundle.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    items = [docs[k] for k in sorted(docs)]
    q = query(*held[0])
    on_the_fly = AspectScorer(d1, tok).score_query(q, items)
    assert encode_items(loaded, items, tok, d1, progress=False) == len(items)
    pre = AspectScorer(d1, tok)
    assert len(pre.row) == len(items)
    precomputed = pre.score_query(q, items)
    np.testing.assert_allclose(precomputed, on_the_fly, atol=2e-2)  # item vectors are stored as float16
    # score_pairs groups pairs by query and keeps the order
    pairs = pre.score_pairs([q, q], [items[3], items[1]])
    np.testing.assert_allclose(pairs, precomputed[[3, 1]], atol=1e-6)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-aspect"):
        AspectBundle.load(tmp_path)


def test_tiers_from_clicks():
    stats = {"q": {"hot": PairStats(10, 6, 2.0), "mid": PairStats(10, 2, 2.0), "cold": PairStats(10, 0, 2.0), "rare": PairStats(1, 1, 0.3)}}
    tiers = {v: t for _, v, t in tier_pairs(stats, TierParams())}
    assert tiers == {"hot": "high", "mid": "medium", "cold": "low"}  # one impression is too little evidence
    assert coec(stats["q"]["hot"], 0.5) > coec(stats["q"]["mid"], 0.5) > coec(stats["q"]["cold"], 0.5)


def test_swap_entity_edits_fields():
    d = doc("周杰伦", "晴天", "v1")
    s = swap_entity(d, "artists", "周杰伦", "林俊杰")
    assert s["artists"] == ["林俊杰"] and "林俊杰" in s["title"] and "周杰伦" not in s["title"] and s["songs"] == ["晴天"]
    assert s["video_id"] != d["video_id"] and d["artists"] == ["周杰伦"]  # the original is untouched
    assert swap_entity(d, "artists", "陈奕迅", "林俊杰") is None
