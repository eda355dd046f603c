"""Layers shared by the expanded-recall models (one place, as the developer guide asks).

`text_features` turns a text into bag features: the small BERT's WordPiece ids (Chinese one
character each, latin word pieces) plus hashed bigrams of adjacent pieces, because Chinese
words are mostly two characters and a bag of single characters cannot tell 晴天 from 天晴.
The same function runs at training, index build and query time, in plain Python + the
`tokenizers` library (no transformers on the request path)."""
from __future__ import annotations

import zlib
from typing import Any

import numpy as np

BIGRAM_BUCKETS = 16384
MAX_PIECES = 48


def text_features(tokenizer: Any, text: str, vocab_size: int, buckets: int = BIGRAM_BUCKETS,
                  max_pieces: int = MAX_PIECES) -> list[int]:
    """WordPiece ids then hashed-bigram ids (offset by vocab_size). `tokenizer` is a
    `tokenizers.Tokenizer` (fast, Rust); special tokens are not added."""
    ids = tokenizer.encode(text, add_special_tokens=False).ids[:max_pieces]
    feats = list(ids)
    for a, b in zip(ids, ids[1:]):
        feats.append(vocab_size + zlib.crc32(f"{a},{b}".encode()) % buckets)
    return feats


def bag_batch(features: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Flattened ids and offsets for torch's EmbeddingBag; an empty text gets the [UNK] id 1
    so every row has at least one feature."""
    flat: list[int] = []
    offsets: list[int] = []
    for f in features:
        offsets.append(len(flat))
        flat.extend(f if f else [1])
    return np.asarray(flat, dtype=np.int64), np.asarray(offsets, dtype=np.int64)


def make_tower(in_dim: int, hidden: int, out_dim: int):
    """Tower head: mean-pooled bag → MLP → L2-normalized vector (cosine = inner product,
    which is what faiss METRIC_INNER_PRODUCT and ES `cosine` expect)."""
    import torch.nn as nn

    return nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, out_dim))
