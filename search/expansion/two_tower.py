"""EBR-style two-tower vector recall (Facebook, "Embedding-based Retrieval in Facebook Search").

Query tower and video tower share one embedding table (initialized from our small BERT's
word-piece embeddings, plus hashed piece bigrams) and each has its own MLP head; both end in
L2-normalized vectors of the index's `vectors.dims`. Trained on clicked (query, video)
pairs of the log's train split with a softmax over in-batch negatives plus hard negatives
mined from text recall (videos text recall ranks for the query that users did not click),
as EBR does.

Why a bag model rather than the BERT itself: the query vector is computed online and must
take < 3 ms on one core; a mean of embeddings and two small matrix products take a few
hundred microseconds in numpy, a 4-layer transformer does not. The towers are saved as plain
arrays (npz, no pickles) beside the tokenizer, and the inference class needs neither torch
nor transformers.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from query_understanding.normalize import normalize, normalize_doc_text

from .layers import BIGRAM_BUCKETS, bag_batch, make_tower, text_features
from ..atomic import replace_dir
from .trainer import TrainConfig, train

MODEL_FILE = "two_tower.npz"
META_FILE = "two_tower.json"


def video_text(title: str, artists: Iterable[str], songs: Iterable[str], tags: Iterable[str]) -> str:
    """What the video tower reads: title, then entities and tags (descriptions are noisy)."""
    return " ".join([title, *artists, *songs, *tags])


def video_text_from_record(r: dict[str, Any]) -> str:
    return normalize_doc_text(video_text(r.get("title", ""), r.get("artists", []), r.get("songs", []), r.get("tags", [])))


def video_text_from_fields(d: dict[str, Any]) -> str:
    """Same text from the index's tokenized fields (tokens joined; the word-piece tokenizer
    splits Chinese per character either way, so spacing does not change the features)."""
    return " ".join([" ".join(d.get("title", [])), *d.get("artists", []), *d.get("songs", []), *d.get("tags", [])])


# ----------------------------------------------------------------------------- training data
@dataclass
class ClickData:
    pairs: list[tuple[str, str]]                       # (normalized query, video_id), one per click
    hard: dict[str, list[str]] = field(default_factory=dict)   # query → text-recall videos not clicked
    clicked: dict[str, set[str]] = field(default_factory=dict)


def read_clicks(impressions: str | Path, split: str = "train", require_valid_play: bool = False) -> ClickData:
    """Clicked pairs of one split; non-clicked impressions the text route retrieved become
    log-mined hard negatives (shown, matched the words, not wanted)."""
    pairs: list[tuple[str, str]] = []
    hard: dict[str, set[str]] = defaultdict(set)
    clicked: dict[str, set[str]] = defaultdict(set)
    with open(impressions, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r.get("split") != split:
                continue
            q = normalize(r.get("query", ""))
            if not q:
                continue
            if r.get("clicked") and (r.get("valid_play") or not require_valid_play):
                pairs.append((q, r["video_id"]))
                clicked[q].add(r["video_id"])
            elif "text" in (r.get("features", {}).get("sources") or {}):
                hard[q].add(r["video_id"])
    hard_out = {q: sorted(v - clicked.get(q, set())) for q, v in hard.items()}
    return ClickData(pairs, {q: v for q, v in hard_out.items() if v}, {q: set(v) for q, v in clicked.items()})


def mine_text_recall_negatives(index_dir: str | Path, queries: list[str], clicked: dict[str, set[str]],
                               skip_top: int = 10, depth: int = 100, per_query: int = 20) -> dict[str, list[str]]:
    """EBR's hard negatives from text recall: videos text recall ranks below the top
    `skip_top` (those are often relevant but unclicked) and within `depth`, minus clicks."""
    from search.config import load_config
    from search.engines.base import make_plan
    from search.pipeline import SearchPipeline

    pipe = SearchPipeline(load_config(None, {"engine": {"kind": "embedded", "index_dir": str(index_dir)},
                                             "understanding": {"params": {"correction": False}}}))
    out: dict[str, list[str]] = {}
    try:
        for q in queries:
            uq = pipe.understand(q)
            if not uq.terms:
                continue
            plan = make_plan(uq.terms, uq.weights, uq.normalized, depth, time.time(), pipe.engine.cfg)
            hits = [h.video_id for h in pipe.engine.text_recall(plan)][skip_top:]
            neg = [v for v in hits if v not in clicked.get(q, set())][:per_query]
            if neg:
                out[q] = neg
    finally:
        pipe.close()
    return out


# ----------------------------------------------------------------------------- model
@dataclass
class TwoTowerConfig:
    dims: int = 64
    embed_dim: int = 256
    hidden: int = 256
    buckets: int = BIGRAM_BUCKETS
    temperature: float = 0.05
    batch_size: int = 256
    hard_per_query: int = 1


def build_model(vocab_size: int, cfg: TwoTowerConfig, bert_embeddings: np.ndarray | None = None):
    import torch
    import torch.nn as nn

    class TwoTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.EmbeddingBag(vocab_size + cfg.buckets, cfg.embed_dim, mode="mean")
            nn.init.normal_(self.embed.weight, std=0.02)
            if bert_embeddings is not None:
                with torch.no_grad():
                    n = min(vocab_size, bert_embeddings.shape[0])
                    e = torch.from_numpy(bert_embeddings[:n, : cfg.embed_dim].astype(np.float32))
                    self.embed.weight[:n] = e
            self.query_tower = make_tower(cfg.embed_dim, cfg.hidden, cfg.dims)
            self.video_tower = make_tower(cfg.embed_dim, cfg.hidden, cfg.dims)

        def encode(self, tower: nn.Module, flat, offsets):
            return nn.functional.normalize(tower(self.embed(flat, offsets)), dim=-1)

    return TwoTower()


def _to_bag(features: list[list[int]]):
    import torch

    flat, off = bag_batch(features)
    return torch.from_numpy(flat), torch.from_numpy(off)


def train_two_tower(clicks: ClickData, video_texts: dict[str, str], bert_dir: str | Path | None, out: str | Path,
                    cfg: TwoTowerConfig | None = None, train_cfg: TrainConfig | None = None, resume: bool = True,
                    tokenizer_dir: str | Path | None = None, log=print) -> dict[str, Any]:
    """Train and save the towers into `out` (npz + tokenizer + json meta)."""
    import torch
    from tokenizers import Tokenizer

    cfg = cfg or TwoTowerConfig()
    tc = train_cfg or TrainConfig(steps=1500, lr=2e-3, checkpoint_every=500)
    out = Path(out)
    tok_dir = Path(tokenizer_dir or bert_dir or "")
    if not (tok_dir / "tokenizer.json").exists():
        raise FileNotFoundError(f"no tokenizer.json in {tok_dir}: pretrain the small BERT first (mvsearch expansion pretrain)")
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    vocab_size = tok.get_vocab_size()
    bert_emb = None
    if bert_dir and (Path(bert_dir) / "config.json").exists():
        from transformers import BertModel

        bert_emb = BertModel.from_pretrained(str(bert_dir), local_files_only=True).embeddings.word_embeddings.weight.detach().numpy()
        cfg.embed_dim = int(bert_emb.shape[1])
    pairs = [(q, v) for q, v in clicks.pairs if v in video_texts]
    if not pairs:
        raise ValueError("no clicked pair whose video is in the catalog")
    vids = sorted({v for _, v in pairs} | {v for hs in clicks.hard.values() for v in hs if v in video_texts})
    vfeat = {v: text_features(tok, video_texts[v], vocab_size, cfg.buckets) for v in vids}
    qfeat = {q: text_features(tok, q, vocab_size, cfg.buckets) for q in {q for q, _ in pairs}}
    hard = {q: [v for v in hs if v in vfeat] for q, hs in clicks.hard.items() if q in qfeat}
    log(f"two-tower: {len(pairs)} clicked pairs, {len(qfeat)} queries, {len(vids)} videos, "
        f"{sum(1 for q in qfeat if hard.get(q))} queries with hard negatives")
    torch.set_num_threads(max(1, tc.threads))
    model = build_model(vocab_size, cfg, bert_emb)

    def sample(rng: np.random.Generator, step: int):
        idx = rng.integers(0, len(pairs), size=cfg.batch_size)
        qs = [pairs[i][0] for i in idx]
        vs = [pairs[i][1] for i in idx]
        negs = []
        for q in qs:
            h = hard.get(q)
            if h and cfg.hard_per_query:
                negs.extend(h[j] for j in rng.integers(0, len(h), size=cfg.hard_per_query))
        return qs, vs, negs

    def loss_fn(batch, step):
        qs, vs, negs = batch
        qv = model.encode(model.query_tower, *_to_bag([qfeat[q] for q in qs]))
        cand = vs + negs
        vv = model.encode(model.video_tower, *_to_bag([vfeat[v] for v in cand]))
        logits = qv @ vv.T / cfg.temperature
        # the same video clicked for two queries of the batch is not a negative for either
        same = torch.tensor([[c == v for c in cand] for v in vs])
        eye = torch.eye(len(vs), len(cand), dtype=torch.bool)
        logits = logits.masked_fill(same & ~eye, -1e4)
        return torch.nn.functional.cross_entropy(logits, torch.arange(len(vs)))

    hist = train(model, loss_fn, sample, tc, ckpt_dir=out.with_name(out.name + ".work") / "checkpoints", resume=resume, log=log)
    emb = TwoTowerEmbedder.from_torch(model, tok_dir, cfg, vocab_size)
    emb.save(out)
    meta = {"config": asdict(cfg), "train": asdict(tc), "history": hist, "pairs": len(pairs), "queries": len(qfeat),
            "videos": len(vids), "bert_init": str(bert_dir) if bert_emb is not None else None}
    _write_json_atomic(out / "train_report.json", meta)
    return meta


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- inference
class TwoTowerEmbedder:
    """Online query encoder and build-time video encoder, numpy only. Same interface as
    the LSA baseline (`name`, `dims`, `encode_tokens`) so the vector route does not care."""

    name = "two_tower"

    def __init__(self, tokenizer_dir: str | Path, weights: dict[str, np.ndarray], meta: dict[str, Any]):
        from tokenizers import Tokenizer

        self.tokenizer_dir = Path(tokenizer_dir)
        self.tok = Tokenizer.from_file(str(self.tokenizer_dir / "tokenizer.json"))
        self.w = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        self.meta = meta
        self.vocab_size = int(meta["vocab_size"])
        self.buckets = int(meta["buckets"])

    @property
    def dims(self) -> int:
        return int(self.w["q_w2"].shape[0])

    @classmethod
    def from_torch(cls, model, tokenizer_dir: str | Path, cfg: TwoTowerConfig, vocab_size: int) -> "TwoTowerEmbedder":
        sd = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        w = {"embed": sd["embed.weight"],
             "q_w1": sd["query_tower.0.weight"], "q_b1": sd["query_tower.0.bias"],
             "q_w2": sd["query_tower.2.weight"], "q_b2": sd["query_tower.2.bias"],
             "v_w1": sd["video_tower.0.weight"], "v_b1": sd["video_tower.0.bias"],
             "v_w2": sd["video_tower.2.weight"], "v_b2": sd["video_tower.2.bias"]}
        return cls(tokenizer_dir, w, {"vocab_size": vocab_size, "buckets": cfg.buckets, "dims": cfg.dims})

    def _features(self, text: str) -> list[int]:
        return text_features(self.tok, text, self.vocab_size, self.buckets) or [1]

    def _tower(self, prefix: str, pooled: np.ndarray) -> np.ndarray:
        h = np.tanh(pooled @ self.w[f"{prefix}_w1"].T + self.w[f"{prefix}_b1"])
        out = h @ self.w[f"{prefix}_w2"].T + self.w[f"{prefix}_b2"]
        n = np.linalg.norm(out, axis=-1, keepdims=True)
        n[n == 0] = 1.0
        return (out / n).astype(np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        pooled = self.w["embed"][self._features(text)].mean(axis=0)
        return self._tower("q", pooled[None, :])[0]

    def encode_tokens(self, tokens: list[str]) -> np.ndarray:
        return self.encode_query(" ".join(tokens))

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        pooled = np.stack([self.w["embed"][self._features(t)].mean(axis=0) for t in texts]) if texts else np.zeros((0, self.w["embed"].shape[1]), np.float32)
        return self._tower("q", pooled)

    def encode_videos(self, texts: list[str]) -> np.ndarray:
        pooled = np.stack([self.w["embed"][self._features(t)].mean(axis=0) for t in texts]) if texts else np.zeros((0, self.w["embed"].shape[1]), np.float32)
        return self._tower("v", pooled)

    def encode_many(self, docs: list[list[str]]) -> np.ndarray:
        """Video vectors from token lists (what `doc_vectors` in ranking/rerank.py passes),
        so diversity and ILS use the same vectors as the index."""
        return self.encode_videos([" ".join(t) for t in docs])

    def save(self, out: str | Path) -> None:
        """Atomic: the directory is assembled beside `out` and renamed over it."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        with open(tmp / MODEL_FILE, "wb") as f:
            np.savez(f, **self.w)
        (tmp / META_FILE).write_text(json.dumps(self.meta), encoding="utf-8")
        for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            if (self.tokenizer_dir / name).exists():
                shutil.copyfile(self.tokenizer_dir / name, tmp / name)
        os.chmod(tmp, 0o755)
        replace_dir(tmp, out)

    @classmethod
    def load(cls, model_dir: str | Path) -> "TwoTowerEmbedder":
        d = Path(model_dir)
        if not (d / MODEL_FILE).exists():
            raise FileNotFoundError(f"no two-tower model in {d} (train one with `mvsearch expansion train-two-tower`)")
        z = np.load(d / MODEL_FILE, allow_pickle=False)
        return cls(d, {k: z[k] for k in z.files}, json.loads((d / META_FILE).read_text(encoding="utf-8")))


def load_bundle_embedder(bundle: Path, manifest: dict[str, Any]):
    """The query embedder that matches the vectors in this index bundle (two-tower when the
    index was built with it, else the LSA baseline); None when the bundle has neither."""
    from search.embedder import LsaEmbedder

    if manifest.get("embedder") == TwoTowerEmbedder.name and (bundle / "two_tower" / MODEL_FILE).exists():
        return TwoTowerEmbedder.load(bundle / "two_tower")
    p = bundle / "embedder.npz"
    return LsaEmbedder.load(p) if p.exists() else None


# ----------------------------------------------------------------------------- evaluation
def retrieval_recall(query_vecs: np.ndarray, video_vecs: np.ndarray, targets: list[set[int]], ks=(10, 100)) -> dict[str, float]:
    """Share of (query, clicked video) pairs whose video is in the query's top k over the
    whole catalog (exact inner product)."""
    out = {f"recall@{k}": 0.0 for k in ks}
    n = 0
    for i in range(0, len(query_vecs), 512):
        s = query_vecs[i : i + 512] @ video_vecs.T
        kmax = max(ks)
        top = np.argpartition(-s, kmax, axis=1)[:, :kmax]
        for r, row in enumerate(top):
            order = row[np.argsort(-s[r, row])]
            for t in targets[i + r]:
                n += 1
                for k in ks:
                    if t in set(order[:k].tolist()):
                        out[f"recall@{k}"] += 1
    return {k: round(v / max(1, n), 4) for k, v in out.items()} | {"pairs": n}
