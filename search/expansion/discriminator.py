"""Rewrite discriminator: does a candidate rewrite mean the same as the query?

A cross-encoder (`BertForSequenceClassification` on our small BERT, loaded from a local
directory) over "[CLS] query [SEP] candidate [SEP]", trained with R-Drop (Liang et al. 2021:
two dropout passes per batch, cross-entropy on both plus the symmetric KL between them),
the regularizer the seed article suggests for small paraphrase sets.

Training pairs:
- positives: knowledge-base aliases (alias ↔ canonical name), same-session reformulations
  (no click → click), and the paraphrase pairs of LCQMC (label 1);
- negatives: same artist, different song (`周杰伦 晴天` vs `周杰伦 七里香` — the hard case for
  a bag-of-words model), one artist's alias vs another artist, and LCQMC label 0.
Held-out: 20% of our pairs (split by a hash of the pair, so a pair never lands on both
sides) and 20% of LCQMC dev (only dev is in ../shared/data; we split it, so the figure is
not comparable one-to-one with published LCQMC *test* accuracy)."""
from __future__ import annotations

import json
import random
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .trainer import TrainConfig, train


@dataclass
class Pair:
    a: str
    b: str
    label: int
    source: str


def _heldout(a: str, b: str, share: float = 0.2) -> bool:
    return zlib.crc32(f"{a}\t{b}".encode()) % 1000 < share * 1000


def our_pairs(session_pairs: list[tuple[str, str]], seed: int = 7, max_per_source: int = 6000) -> list[Pair]:
    from search.kb import load_kb

    from .rewrites import kb_pairs

    rng = random.Random(seed)
    kb = load_kb()
    out: list[Pair] = []
    kbp = kb_pairs()
    rng.shuffle(kbp)
    out += [Pair(a, c, 1, "kb_alias") for a, c in kbp[:max_per_source]]
    sp = list(session_pairs)
    rng.shuffle(sp)
    out += [Pair(a, b, 1, "session") for a, b in sp[:max_per_source]]
    # hard negatives: same artist, different song
    neg: list[Pair] = []
    artists = [a for a, ss in kb.songs_by_artist.items() if len(ss) >= 2]
    rng.shuffle(artists)
    for a in artists:
        s1, s2 = rng.sample(kb.songs_by_artist[a], 2)
        if s1["title"] != s2["title"]:
            neg.append(Pair(f"{a} {s1['title']}".lower(), f"{a} {s2['title']}".lower(), 0, "same_artist_other_song"))
        if len(neg) >= max_per_source:
            break
    out += neg
    # an alias of one artist against another artist's name
    canon = sorted({c for _, c in kbp})
    for a, c in kbp[: max_per_source // 2]:
        other = rng.choice(canon)
        if other != c:
            out.append(Pair(a, other, 0, "alias_other_artist"))
    return out


def lcqmc_pairs(path: str | Path) -> list[Pair]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) == 3 and p[2] in ("0", "1"):
                out.append(Pair(p[0], p[1], int(p[2]), "lcqmc"))
    return out


def split_pairs(pairs: list[Pair]) -> tuple[list[Pair], list[Pair]]:
    tr, te = [], []
    for p in pairs:
        (te if _heldout(p.a, p.b) else tr).append(p)
    return tr, te


def load_classifier(model_dir: str | Path, num_labels: int = 2):
    from transformers import BertForSequenceClassification

    return BertForSequenceClassification.from_pretrained(str(model_dir), num_labels=num_labels, local_files_only=True)


def train_discriminator(train_pairs: list[Pair], bert_dir: str | Path, out: str | Path, train_cfg: TrainConfig | None = None,
                        batch_size: int = 32, max_len: int = 48, rdrop_alpha: float = 1.0, resume: bool = True, log=print):
    import torch
    import torch.nn.functional as F

    from ..atomic import replace_dir
    from .bert import load_tokenizer

    tc = train_cfg or TrainConfig(steps=300, lr=1e-4, checkpoint_every=100)
    out = Path(out)
    tok = load_tokenizer(bert_dir)
    torch.set_num_threads(max(1, tc.threads))
    model = load_classifier(bert_dir)
    if not train_pairs:
        raise ValueError("no training pairs")
    # balance sources: each batch draws from every source, so 15k LCQMC pairs do not drown 1k sessions
    by_src: dict[str, list[Pair]] = {}
    for p in train_pairs:
        by_src.setdefault(p.source, []).append(p)
    srcs = sorted(by_src)
    log("discriminator training pairs: " + json.dumps({s: len(v) for s, v in by_src.items()}))

    def sample(rng: np.random.Generator, step: int):
        picks = []
        for i in range(batch_size):
            src = by_src[srcs[int(rng.integers(len(srcs)))]]
            picks.append(src[int(rng.integers(len(src)))])
        enc = tok([p.a for p in picks], [p.b for p in picks], truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        return enc, torch.tensor([p.label for p in picks])

    def loss_fn(batch, step):
        enc, y = batch
        l1 = model(**enc).logits
        l2 = model(**enc).logits  # second dropout pass (R-Drop)
        ce = (F.cross_entropy(l1, y) + F.cross_entropy(l2, y)) / 2
        p1, p2 = F.log_softmax(l1, -1), F.log_softmax(l2, -1)
        kl = (F.kl_div(p1, p2, log_target=True, reduction="batchmean") + F.kl_div(p2, p1, log_target=True, reduction="batchmean")) / 2
        return ce + rdrop_alpha * kl

    hist = train(model, loss_fn, sample, tc, ckpt_dir=out.with_name(out.name + ".work") / "checkpoints", resume=resume, log=log)
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    (tmp / "train_report.json").write_text(json.dumps({"train": asdict(tc), "history": hist, "rdrop_alpha": rdrop_alpha,
                                                       "pairs": {s: len(v) for s, v in by_src.items()}}, indent=1), encoding="utf-8")
    replace_dir(tmp, out)
    return model, tok, hist


class Discriminator:
    """Offline scorer: P(same meaning) for (query, candidate) pairs, batched."""

    def __init__(self, model_dir: str | Path, threads: int = 1, max_len: int = 48):
        import torch

        from .bert import load_tokenizer

        torch.set_num_threads(threads)
        self.tok = load_tokenizer(model_dir)
        self.model = load_classifier(model_dir).eval()
        self.max_len = max_len

    def score(self, a: list[str], b: list[str], batch_size: int = 128) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(a), batch_size):
                enc = self.tok(a[i : i + batch_size], b[i : i + batch_size], truncation=True, max_length=self.max_len,
                               padding=True, return_tensors="pt")
                out.append(torch.softmax(self.model(**enc).logits, -1)[:, 1].numpy())
        return np.concatenate(out) if out else np.zeros(0)


def evaluate_pairs(disc: Discriminator, pairs: list[Pair], threshold: float = 0.5) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

    if not pairs:
        return {}
    p = disc.score([x.a for x in pairs], [x.b for x in pairs])
    y = np.array([x.label for x in pairs])
    pred = (p >= threshold).astype(int)
    pr, rc, f1, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    res: dict[str, Any] = {"pairs": len(pairs), "accuracy": round(float(accuracy_score(y, pred)), 4),
                           "precision": round(float(pr), 4), "recall": round(float(rc), 4), "f1": round(float(f1), 4)}
    if len(set(y.tolist())) == 2:
        res["auc"] = round(float(roc_auc_score(y, p)), 4)
    by_src: dict[str, Any] = {}
    for s in sorted({x.source for x in pairs}):
        idx = [i for i, x in enumerate(pairs) if x.source == s]
        by_src[s] = {"pairs": len(idx), "accuracy": round(float((pred[idx] == y[idx]).mean()), 4)}
    res["by_source"] = by_src
    return res
