"""Training the NER tagger: one command, progress, a checkpoint per epoch (a rerun resumes),
a fixed seed.

    mvsearch qu train-ner --catalog var/demo/docs.jsonl --out var/models/ner.pt [--cais ../shared/data/nlu/cais_music]
"""
from __future__ import annotations

import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .lexicon import EntityLexicon
from .tagger import TAG_ID, BiLstmCrfTagger, CharVocab, NerTagger, TaggerConfig, lexicon_tags
from .training_data import LabelledText

log = logging.getLogger("mvsearch.ner")


@dataclass
class TrainConfig:
    epochs: int = 4
    batch_size: int = 64
    lr: float = 2e-3
    lexicon_dropout: float = 0.3   # share of examples trained without the dictionary's reading
    min_char_count: int = 2
    seed: int = 0
    threads: int = 1
    dev_share: float = 0.05


def _encode(items: Sequence[LabelledText], vocab: CharVocab, lexicon: EntityLexicon | None, max_chars: int):
    out = []
    for it in items:
        text = it.text[:max_chars]
        if not text:
            continue
        tags = [TAG_ID[t] for t in it.bio()[: len(text)]]
        out.append((vocab.encode(text), lexicon_tags(lexicon, text), tags))
    return out


def _batches(data, batch_size: int, rng: random.Random, lex_dropout: float):
    order = sorted(range(len(data)), key=lambda i: (len(data[i][0]), rng.random()))
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(chunks)
    for idx in chunks:
        T = max(len(data[i][0]) for i in idx)
        chars = torch.zeros(len(idx), T, dtype=torch.long)
        lex = torch.zeros(len(idx), T, dtype=torch.long)
        tags = torch.zeros(len(idx), T, dtype=torch.long)
        mask = torch.zeros(len(idx), T, dtype=torch.bool)
        for r, i in enumerate(idx):
            c, l, t = data[i]
            n = len(c)
            chars[r, :n] = torch.tensor(c)
            if rng.random() >= lex_dropout:
                lex[r, :n] = torch.tensor(l)
            tags[r, :n] = torch.tensor(t)
            mask[r, :n] = True
        yield chars, lex, tags, mask


def train_tagger(items: Sequence[LabelledText], lexicon: EntityLexicon | None, out: str | Path,
                 cfg: TrainConfig | None = None, model_cfg: TaggerConfig | None = None,
                 progress: Callable[[str], None] | None = None) -> NerTagger:
    cfg = cfg or TrainConfig()
    model_cfg = model_cfg or TaggerConfig()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)  # the checkpoint goes beside the model from the first epoch
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, cfg.threads))
    rng = random.Random(cfg.seed)
    items = list(items)
    rng.shuffle(items)
    n_dev = max(1, int(len(items) * cfg.dev_share)) if len(items) > 20 else 0
    dev, train = items[:n_dev], items[n_dev:]
    counts = Counter(c for it in train for c in it.text)
    vocab = CharVocab(sorted(c for c, n in counts.items() if n >= cfg.min_char_count))
    train_data = _encode(train, vocab, lexicon, model_cfg.max_chars)
    dev_data = _encode(dev, vocab, lexicon, model_cfg.max_chars)
    model = BiLstmCrfTagger(len(vocab), model_cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ckpt = out.with_suffix(out.suffix + ".ckpt")
    start_epoch = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state.get("vocab") == vocab.itos and state.get("config") == vars(model_cfg):
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            start_epoch = state["epoch"] + 1
            rng.setstate(state["rng"])
            (progress or log.info)(f"resuming from {ckpt} after epoch {start_epoch}")
    history = []
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0, total, nb = time.time(), 0.0, 0
        n_batches = (len(train_data) + cfg.batch_size - 1) // cfg.batch_size
        for chars, lex, tags, mask in _batches(train_data, cfg.batch_size, rng, cfg.lexicon_dropout):
            loss = model.crf.nll(model.emissions(chars, lex), tags, mask)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            total += loss.item()
            nb += 1
            if progress and nb % 100 == 0:
                progress(f"epoch {epoch + 1}/{cfg.epochs} batch {nb}/{n_batches} loss {total / nb:.3f}")
        model.eval()
        dev_loss = 0.0
        with torch.no_grad():
            for chars, lex, tags, mask in _batches(dev_data, 256, random.Random(0), 0.0):
                dev_loss += float(model.crf.nll(model.emissions(chars, lex), tags, mask)) * len(chars)
        dev_loss /= max(1, len(dev_data))
        history.append({"epoch": epoch + 1, "train_loss": round(total / max(1, nb), 4), "dev_loss": round(dev_loss, 4),
                        "seconds": round(time.time() - t0, 1)})
        (progress or log.info)(f"epoch {epoch + 1}: train loss {total / max(1, nb):.3f}, dev loss {dev_loss:.3f} ({time.time() - t0:.0f} s)")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "rng": rng.getstate(),
                    "vocab": vocab.itos, "config": vars(model_cfg)}, ckpt)
    sources = Counter(it.source for it in items)
    tagger = NerTagger(model, vocab, {"examples": dict(sources), "history": history, "seed": cfg.seed,
                                      "lexicon_dropout": cfg.lexicon_dropout})
    tagger.save(out)
    ckpt.unlink(missing_ok=True)
    return tagger


__all__ = ["TrainConfig", "train_tagger"]
