"""Rewrite discriminator: a tiny cross-encoder trained with R-Drop from a tiny pretrained
BERT learns a toy pair rule, saves, reloads from its local directory and scores pairs."""
from __future__ import annotations

import random

import pytest

import torch  # noqa: E402,F401

ARTISTS = ["周杰伦", "田馥甄", "林俊杰", "邓紫棋", "五月天", "陈奕迅"]
SONGS = ["晴天", "小幸运", "江南", "光年之外", "倔强", "十年"]


def _pairs(seed: int, n: int):
    from search.expansion.discriminator import Pair

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, s = rng.choice(ARTISTS), rng.choice(SONGS)
        other = rng.choice([x for x in SONGS if x != s])
        # same song (a reformulation) vs same artist, different song (the hard negative)
        out.append(Pair(f"{a} {s}", f"{s} {a} live", 1, "toy"))
        out.append(Pair(f"{a} {s}", f"{a} {other} live", 0, "toy"))
    return out


def test_discriminator_learns_and_reloads(tmp_path):
    from search.expansion.bert import BertSize, pretrain
    from search.expansion.discriminator import Discriminator, evaluate_pairs, train_discriminator
    from search.expansion.trainer import TrainConfig

    lines = [f"{p.a} {p.b}" for p in _pairs(0, 100)]
    bert = tmp_path / "bert"
    pretrain(lines, bert, BertSize(vocab_size=200, layers=1, hidden=32, heads=2, intermediate=64, max_len=24),
             TrainConfig(steps=2, show_progress=False), batch_size=8, log=lambda *_: None)
    out = tmp_path / "disc"
    train_discriminator(_pairs(1, 200), bert, out, TrainConfig(steps=120, lr=3e-3, show_progress=False, checkpoint_every=1000),
                        batch_size=16, max_len=24, log=lambda *_: None)
    disc = Discriminator(out)
    res = evaluate_pairs(disc, _pairs(2, 40))
    assert res["accuracy"] >= 0.85, res
    p = disc.score(["周杰伦 晴天"], ["晴天 周杰伦 live"])
    assert p.shape == (1,) and 0.0 <= float(p[0]) <= 1.0
