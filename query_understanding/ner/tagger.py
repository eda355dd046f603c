"""The trained sequence tagger: a character BiLSTM-CRF (torch).

Input per character: its embedding plus the dictionary's reading of it (B/I of the lexicon
match covering it, by type), so the tagger learns from context *when to trust the
dictionary*: `晴天` after an artist is a song, inside `今天是晴天吗` it is not, and a name the
dictionary has never seen (`我想听<new song>`) is still found from its context. During
training the dictionary features are dropped for a share of the examples, so the characters
alone also carry the decision.

Output: BIO tags over `ENTITY_TYPES`, by Viterbi, with each span's confidence from the CRF's
marginals (forward-backward), which the ensemble uses to settle conflicts.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .lexicon import ENTITY_TYPES, EntityLexicon

TAGS = ("O",) + tuple(f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I"))
TAG_ID = {t: i for i, t in enumerate(TAGS)}
LEX_TAGS = TAGS  # the dictionary's reading uses the same BIO alphabet
PAD, UNK, SPACE = 0, 1, 2
FORMAT_VERSION = 1


@dataclass
class TaggerConfig:
    char_dim: int = 64
    lex_dim: int = 16
    hidden: int = 96
    dropout: float = 0.2
    max_chars: int = 48


class CharVocab:
    """Characters seen at least `min_count` times in training; the rest share UNK."""

    def __init__(self, chars: Sequence[str]):
        self.itos = ["<pad>", "<unk>", " "] + [c for c in chars if c not in ("<pad>", "<unk>", " ")]
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(c, UNK) for c in text]

    def __len__(self) -> int:
        return len(self.itos)


def lexicon_tags(lexicon: EntityLexicon | None, text: str) -> list[int]:
    """The dictionary's BIO reading of each character (O where nothing matches)."""
    out = [0] * len(text)
    if lexicon is None:
        return out
    for m in lexicon.match(text):
        out[m.start] = TAG_ID[f"B-{m.type}"]
        for k in range(m.start + 1, m.end):
            out[k] = TAG_ID[f"I-{m.type}"]
    return out


class CRF(nn.Module):
    """Linear-chain CRF: transition scores, log-likelihood by the forward algorithm, Viterbi
    decoding and marginals. BIO constraints (I-x only after B-x / I-x) are hard-coded as
    -inf transitions so no decoding can produce an invalid span."""

    def __init__(self, num_tags: int):
        super().__init__()
        self.trans = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        mask = torch.zeros(num_tags, num_tags)
        start_mask = torch.zeros(num_tags)
        for j, t in enumerate(TAGS):
            if t.startswith("I-"):
                typ = t[2:]
                start_mask[j] = -1e4
                for i, s in enumerate(TAGS):
                    if s not in (f"B-{typ}", f"I-{typ}"):
                        mask[i, j] = -1e4
        self.register_buffer("mask", mask)
        self.register_buffer("start_mask", start_mask)

    def _trans(self) -> torch.Tensor:
        return self.trans + self.mask

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood; emissions (B, T, K), tags (B, T), mask (B, T) bool."""
        B, T, K = emissions.shape
        trans = self._trans()
        start = self.start + self.start_mask
        # score of the gold path
        score = start[tags[:, 0]] + emissions[:, 0].gather(1, tags[:, :1]).squeeze(1)
        for t in range(1, T):
            step = trans[tags[:, t - 1], tags[:, t]] + emissions[:, t].gather(1, tags[:, t:t + 1]).squeeze(1)
            score = score + step * mask[:, t]
        lengths = mask.sum(1).long()
        last = tags.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
        score = score + self.end[last]
        # log partition
        alpha = start.unsqueeze(0) + emissions[:, 0]
        for t in range(1, T):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans.unsqueeze(0), dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t].unsqueeze(1), nxt, alpha)
        log_z = torch.logsumexp(alpha + self.end.unsqueeze(0), dim=1)
        return (log_z - score).mean()

    def numpy_params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.no_grad():
            return ((self.trans + self.mask).numpy().astype(np.float64),
                    (self.start + self.start_mask).numpy().astype(np.float64), self.end.numpy().astype(np.float64))


def viterbi(em: np.ndarray, trans: np.ndarray, start: np.ndarray, end: np.ndarray) -> list[int]:
    T, K = em.shape
    score = start + em[0]
    back = np.zeros((T, K), dtype=np.int64)
    for t in range(1, T):
        cand = score[:, None] + trans
        back[t] = cand.argmax(0)
        score = cand.max(0) + em[t]
    best = [int((score + end).argmax())]
    for t in range(T - 1, 0, -1):
        best.append(int(back[t, best[-1]]))
    return best[::-1]


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def marginals(em: np.ndarray, trans: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """P(tag at t | sentence), by forward-backward in log space."""
    logsumexp = _logsumexp
    T, K = em.shape
    alpha = np.zeros((T, K))
    beta = np.zeros((T, K))
    alpha[0] = start + em[0]
    for t in range(1, T):
        alpha[t] = logsumexp(alpha[t - 1][:, None] + trans, axis=0) + em[t]
    beta[T - 1] = end
    for t in range(T - 2, -1, -1):
        beta[t] = logsumexp(trans + (em[t + 1] + beta[t + 1])[None, :], axis=1)
    log_z = logsumexp(alpha[T - 1] + end, axis=0)
    return np.exp(alpha + beta - log_z)


class BiLstmCrfTagger(nn.Module):
    def __init__(self, vocab_size: int, cfg: TaggerConfig):
        super().__init__()
        self.cfg = cfg
        self.char_emb = nn.Embedding(vocab_size, cfg.char_dim, padding_idx=PAD)
        self.lex_emb = nn.Embedding(len(LEX_TAGS), cfg.lex_dim)
        self.lstm = nn.LSTM(cfg.char_dim + cfg.lex_dim, cfg.hidden, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(2 * cfg.hidden, len(TAGS))
        self.crf = CRF(len(TAGS))

    def emissions(self, chars: torch.Tensor, lex: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.char_emb(chars), self.lex_emb(lex)], dim=-1)
        h, _ = self.lstm(self.drop(x))
        return self.out(self.drop(h))


@dataclass
class Span:
    start: int
    end: int
    type: str
    confidence: float


def decode_spans(tags: Sequence[int], probs: np.ndarray | None = None) -> list[Span]:
    """BIO tag ids → spans; confidence = the mean marginal of the span's own tags."""
    spans: list[Span] = []
    i, n = 0, len(tags)
    while i < n:
        t = TAGS[tags[i]]
        if t.startswith("B-"):
            typ = t[2:]
            j = i + 1
            while j < n and TAGS[tags[j]] == f"I-{typ}":
                j += 1
            conf = float(np.mean([probs[k, tags[k]] for k in range(i, j)])) if probs is not None else 1.0
            spans.append(Span(i, j, typ, conf))
            i = j
        else:
            i += 1
    return spans


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _NumpyBiLstm:
    """The trained network's inference in numpy: one short query through torch costs ~1 ms
    of framework overhead; the same arithmetic on 10 characters here costs a fraction."""

    def __init__(self, model: BiLstmCrfTagger):
        sd = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
        self.char = sd["char_emb.weight"]
        self.lex = sd["lex_emb.weight"]
        self.H = model.cfg.hidden
        self.dirs = [(sd[f"lstm.weight_ih_l0{sfx}"].T.copy(), sd[f"lstm.weight_hh_l0{sfx}"].T.copy(),
                      sd[f"lstm.bias_ih_l0{sfx}"] + sd[f"lstm.bias_hh_l0{sfx}"]) for sfx in ("", "_reverse")]
        self.out_w = sd["out.weight"].T.copy()
        self.out_b = sd["out.bias"]

    def emissions(self, chars: list[int], lex: list[int]) -> np.ndarray:
        x = np.concatenate([self.char[chars], self.lex[lex]], axis=1)
        T, H = len(chars), self.H
        hs = []
        for d, (wih, whh, b) in enumerate(self.dirs):
            xs = x @ wih + b
            h = np.zeros(H)
            c = np.zeros(H)
            out = np.zeros((T, H))
            for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                g = xs[t] + h @ whh
                sg = 1.0 / (1.0 + np.exp(-g))  # one call for the three sigmoid gates (i, f, o); g's cell part below
                c = sg[H:2 * H] * c + sg[:H] * np.tanh(g[2 * H:3 * H])
                h = sg[3 * H:] * np.tanh(c)
                out[t] = h
            hs.append(out)
        return np.concatenate(hs, axis=1) @ self.out_w + self.out_b


class NerTagger:
    """A trained tagger ready to predict (CPU, one query at a time, numpy inference)."""

    def __init__(self, model: BiLstmCrfTagger, vocab: CharVocab, meta: dict | None = None):
        self.model = model.eval()
        self.vocab = vocab
        self.meta = meta or {}
        self._crf = model.crf.numpy_params()
        self._np = _NumpyBiLstm(self.model)

    def predict(self, text: str, lexicon: EntityLexicon | None = None, lex_ids: list[int] | None = None) -> list[Span]:
        return self.predict_with_outside(text, lexicon, lex_ids)[0]

    def predict_with_outside(self, text: str, lexicon: EntityLexicon | None = None,
                             lex_ids: list[int] | None = None) -> tuple[list[Span], np.ndarray]:
        """Spans, and per character the probability that it is outside any entity."""
        text = text[: self.model.cfg.max_chars]
        if not text.strip():
            return [], np.ones(len(text))
        lex = lex_ids[: len(text)] if lex_ids is not None else lexicon_tags(lexicon, text)
        em = self._np.emissions(self.vocab.encode(text), lex)
        tags = viterbi(em, *self._crf)
        probs = marginals(em, *self._crf)
        return [s for s in decode_spans(tags, probs) if text[s.start:s.end].strip()], probs[:, 0]

    def save(self, path: str | Path) -> None:
        """One file (torch.save of weights + vocab + config), written atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT_VERSION, "tags": list(TAGS), "config": asdict(self.model.cfg),
                   "vocab": self.vocab.itos[3:], "state": self.model.state_dict(), "meta": self.meta}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        os.close(fd)
        torch.save(payload, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "NerTagger":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"NER model {path} does not exist; train it with `mvsearch qu train-ner`")
        payload = torch.load(path, map_location="cpu", weights_only=False)
        if payload.get("format") != FORMAT_VERSION or tuple(payload.get("tags", ())) != TAGS:
            raise ValueError(f"NER model {path} was trained for another tag set or format; retrain it with `mvsearch qu train-ner`")
        vocab = CharVocab(payload["vocab"])
        model = BiLstmCrfTagger(len(vocab), TaggerConfig(**payload["config"]))
        model.load_state_dict(payload["state"])
        return cls(model, vocab, payload.get("meta"))


__all__ = ["BiLstmCrfTagger", "CRF", "CharVocab", "NerTagger", "Span", "TaggerConfig", "TAGS", "TAG_ID",
           "decode_spans", "lexicon_tags", "marginals", "viterbi"]
