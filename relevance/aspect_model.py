"""The aspect relevance model (article §2.3 语义相关性模型 - Aspect Relevance Model).

Two towers share one embedding table of words and characters. Each tower encodes the raw
text and every NER aspect separately:

    query aspects  text (all query terms), artist, song, show, version   (from UnderstoodQuery)
    item aspects   title, artist, song, tags, uploader, version          (from the stored video)

Each aspect is encoded by CNN-based self-attention: for every kernel size k the queries, keys
and values of a self-attention layer are 1-D convolutions of width k over the embeddings, and
the attended sequence is mean-pooled into one vector, so an aspect gets one vector per kernel
size ("several kernels → several vectors"). Query and item vectors then meet only through a
weak interaction — [q, i, q+i, |q-i|, q⊙i] plus an embedding of which aspect pair it is — that
a fully connected layer (ReLU) turns into a hidden vector per (aspect pair, kernel).
Max-pooling over all pairs and kernels, feature by feature, then a linear layer and a sigmoid
give the relevance. Max-pooling hidden vectors rather than per-pair scalars (our choice) keeps
"the song matches but the artist does not" expressible: a unit that fires on an artist
mismatch survives the pooling and can pull the score down.

Because item vectors never see the query, they are computed once per index (`encode_items`,
stored as `item_vectors.npy` + `item_ids.json` next to the model); online only the query tower
and the interaction run (`AspectScorer`).

Tokens: our tokenizer's words (jieba + business dictionary) plus the characters of every
non-ASCII word — unknown Chinese words are frequent, and their characters still carry
meaning. The vocabulary comes from the training data; anything else hashes into a fixed
number of OOV buckets, so two different unknown words rarely share a vector.
"""
from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

QUERY_ASPECTS = ("text", "artist", "song", "show", "version")
ITEM_ASPECTS = ("title", "artist", "song", "tags", "uploader", "version")
# Which query aspect is compared with which item aspect. The raw query meets every item
# field (aliases, lyrics and uploaders are typed as plain text); named entities meet their
# own field and the title (user uploads often have empty structured fields).
ASPECT_PAIRS: tuple[tuple[str, str], ...] = (
    ("text", "title"), ("text", "artist"), ("text", "song"), ("text", "tags"), ("text", "uploader"),
    ("artist", "artist"), ("artist", "title"), ("song", "song"), ("song", "title"),
    ("show", "tags"), ("show", "title"), ("version", "version"),
)
QUERY_MAX_LEN = {"text": 24, "artist": 12, "song": 16, "show": 12, "version": 8}
ITEM_MAX_LEN = {"title": 40, "artist": 16, "song": 20, "tags": 24, "uploader": 12, "version": 12}

# A video's category as the words users type for it, so a version word in the query
# ("live", "翻唱") can meet the category of a video whose title does not say it.
CATEGORY_WORDS = {
    "mv": ["mv", "官方"], "live": ["live", "现场", "演唱会"], "cover": ["翻唱", "cover"],
    "dance": ["舞蹈", "翻跳", "dance"], "tutorial": ["教学", "教程"], "reaction": ["reaction"],
    "variety": ["综艺", "节目"], "fan_edit": ["混剪", "剪辑"], "lyric": ["歌词", "动态歌词"], "other": [],
}

PAD, N_SPECIAL = 0, 1


def units(tokens: Iterable[str]) -> list[str]:
    """Model units of a token list: every word, then the characters of non-ASCII words
    (prefixed so the character 晴 and the one-character word 晴 stay distinct)."""
    toks = [t for t in tokens if t]
    chars = [f"#{c}" for t in toks if not t.isascii() and len(t) > 1 for c in t]
    return toks + chars


@dataclass
class Vocab:
    """Words and characters seen in training; the rest hash into `oov_buckets` ids."""

    words: list[str]
    oov_buckets: int = 2000

    def __post_init__(self) -> None:
        self._index = {w: i + N_SPECIAL for i, w in enumerate(self.words)}

    @property
    def size(self) -> int:
        return N_SPECIAL + len(self.words) + self.oov_buckets

    def id(self, unit: str) -> int:
        i = self._index.get(unit)
        if i is not None:
            return i
        return N_SPECIAL + len(self.words) + zlib.crc32(unit.encode("utf-8")) % self.oov_buckets

    def encode(self, unit_list: Sequence[str], max_len: int) -> list[int]:
        return [self.id(u) for u in unit_list[:max_len]]

    @classmethod
    def build(cls, unit_lists: Iterable[Sequence[str]], min_count: int = 2, max_size: int = 60_000,
              oov_buckets: int = 2000) -> "Vocab":
        c: Counter[str] = Counter()
        for ul in unit_lists:
            c.update(ul)
        words = [w for w, n in sorted(c.items(), key=lambda x: (-x[1], x[0])) if n >= min_count][:max_size]
        return cls(words, oov_buckets)


@dataclass
class AspectConfig:
    emb_dim: int = 48
    dim: int = 16                        # vector size per aspect per kernel
    kernels: tuple[int, ...] = (1, 2, 3)
    hidden: int = 32                     # one fully connected layer: 500 candidates × pairs × kernels rows run it online
    pair_dim: int = 8
    dropout: float = 0.1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AspectConfig":
        d = dict(d)
        if "kernels" in d:
            d["kernels"] = tuple(int(k) for k in d["kernels"])
        return cls(**d)


class ConvSelfAttention(nn.Module):
    """One tower's aspect encoder: per kernel size, self-attention whose Q/K/V are 1-D
    convolutions (local n-gram context), mean-pooled over the unmasked positions."""

    def __init__(self, emb_dim: int, dim: int, kernels: Sequence[int]):
        super().__init__()
        self.dim = dim
        # One conv produces Q, K and V for a kernel size; 'same' length via left/right padding.
        self.convs = nn.ModuleList(nn.Conv1d(emb_dim, 3 * dim, k, padding=0) for k in kernels)
        self.kernels = tuple(kernels)
        self.out = nn.ModuleList(nn.Linear(dim, dim) for _ in kernels)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """emb (B, L, E), mask (B, L) bool → (B, K, dim); all-masked rows give zeros."""
        x = emb.transpose(1, 2)  # (B, E, L)
        m = mask.unsqueeze(1)    # (B, 1, L)
        maskf = mask.float()
        n = maskf.sum(1, keepdim=True).clamp(min=1.0)
        outs = []
        for conv, lin, k in zip(self.convs, self.out, self.kernels):
            left = (k - 1) // 2
            h = conv(nn.functional.pad(x, (left, k - 1 - left)))  # (B, 3d, L)
            q, kk, v = h.transpose(1, 2).split(self.dim, dim=2)    # (B, L, d) each
            att = torch.bmm(q, kk.transpose(1, 2)) / self.dim ** 0.5  # (B, L, L)
            att = att.masked_fill(~m, -1e4).softmax(-1)
            o = torch.relu(torch.bmm(att, v))                      # (B, L, d)
            pooled = (o * maskf.unsqueeze(2)).sum(1) / n            # (B, d)
            outs.append(torch.tanh(lin(pooled)))
        return torch.stack(outs, 1) * (maskf.sum(1) > 0).float().view(-1, 1, 1)


class AspectRelevanceModel(nn.Module):
    def __init__(self, vocab_size: int, cfg: AspectConfig):
        super().__init__()
        self.cfg = cfg
        self.emb = nn.Embedding(vocab_size, cfg.emb_dim, padding_idx=PAD)  # shared by both towers
        self.query_enc = ConvSelfAttention(cfg.emb_dim, cfg.dim, cfg.kernels)
        self.item_enc = ConvSelfAttention(cfg.emb_dim, cfg.dim, cfg.kernels)
        self.query_aspect_emb = nn.Parameter(torch.zeros(len(QUERY_ASPECTS), cfg.emb_dim))
        self.item_aspect_emb = nn.Parameter(torch.zeros(len(ITEM_ASPECTS), cfg.emb_dim))
        self.pair_emb = nn.Embedding(len(ASPECT_PAIRS) * len(cfg.kernels), cfg.pair_dim)
        d = cfg.dim
        self.fc = nn.Linear(5 * d + cfg.pair_dim, cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, 1)
        self.qa_idx = torch.tensor([QUERY_ASPECTS.index(a) for a, _ in ASPECT_PAIRS])
        self.ia_idx = torch.tensor([ITEM_ASPECTS.index(b) for _, b in ASPECT_PAIRS])

    # -- towers -------------------------------------------------------------------------
    def _encode(self, enc: ConvSelfAttention, aspect_emb: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, A, L) → vectors (B, A, K, d), aspect present mask (B, A). Each aspect is
        encoded at its own length (an artist name is a few units, a title dozens): padding
        columns would cost most of the convolution time."""
        mask = ids != PAD
        B, A, _ = ids.shape
        vecs = []
        for a in range(A):
            m = mask[:, a]
            used = m.any(0).nonzero()
            if not len(used):  # nobody in the batch has this aspect (online: most query aspects)
                vecs.append(torch.zeros(B, len(self.cfg.kernels), self.cfg.dim))
                continue
            L = int(used.max()) + 1
            e = self.emb(ids[:, a, :L]) + aspect_emb[a]  # the aspect tells the encoder what it reads
            vecs.append(enc(e, m[:, :L]))
        return torch.stack(vecs, 1), mask.any(-1)

    def encode_query(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encode(self.query_enc, self.query_aspect_emb, ids)

    def encode_item(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encode(self.item_enc, self.item_aspect_emb, ids)

    # -- interaction --------------------------------------------------------------------
    def interact(self, qv: torch.Tensor, qm: torch.Tensor, iv: torch.Tensor, im: torch.Tensor,
                 return_pairs: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """qv (B, Aq, K, d) or (1, …) broadcast, qm (B|1, Aq); iv (B, Ai, K, d), im (B, Ai).
        Returns logits (B,) [and per-pair logits (B, P) for explain]."""
        qa, ia = self.qa_idx, self.ia_idx
        pair_ids = torch.arange(len(ASPECT_PAIRS))
        if qv.shape[0] == 1 and not return_pairs and not self.training:
            return self._interact_one(qv, qm, iv, im)
        d = self.cfg.dim
        lin1 = self.fc
        W = lin1.weight  # (H, 5d + pair_dim) over [q, i, q+i, |q-i|, q*i, pair]
        # The first layer is linear, so its q, i and q+i parts split into a per-query and a
        # per-item projection; only |q-i| and q*i need the (item, pair) product.
        q_proj = qv @ (W[:, :d] + W[:, 2 * d : 3 * d]).T          # (Bq, Aq, K, H)
        i_proj = iv @ (W[:, d : 2 * d] + W[:, 2 * d : 3 * d]).T   # (B, Ai, K, H)
        K = len(self.cfg.kernels)
        pe = self.pair_emb.weight.view(len(ASPECT_PAIRS), K, -1)[pair_ids] @ W[:, 5 * d :].T + lin1.bias  # (P, K, H)
        q, i = qv[:, qa], iv[:, ia]                                # (Bq|B, P, K, d)
        cross = torch.cat(torch.broadcast_tensors((q - i).abs(), q * i), -1) @ W[:, 3 * d : 5 * d].T
        h = self.dropout(torch.relu(q_proj[:, qa] + i_proj[:, ia] + pe + cross))  # (B, P, K, H)
        B = h.shape[0]
        valid = torch.broadcast_to(qm[:, qa] & im[:, ia], (B, len(qa)))
        # h ≥ 0 (ReLU), so zeroing invalid pairs before the max equals leaving them out
        # (and a broadcast masked_fill is a slow path: 10 ms at 500 candidates).
        pooled = (h * valid[:, :, None, None].to(h.dtype)).amax(dim=(1, 2))
        logit = self.head(pooled).squeeze(-1)
        if not return_pairs:
            return logit
        pair_logits = self.head(h).squeeze(-1).amax(-1).masked_fill(~valid, float("-inf"))
        return logit, pair_logits

    def _interact_one(self, qv: torch.Tensor, qm: torch.Tensor, iv: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        """`interact` for one query and many items (serving), same result, fewer passes over
        memory: pairs whose query aspect is absent are skipped (they are masked anyway), and
        with q fixed the q⊙i term folds into the item-side weight, so one batched matmul per
        (pair, kernel) of [i, |q-i|] does the whole first layer."""
        keep = qm[0, self.qa_idx]
        qa, ia = self.qa_idx[keep], self.ia_idx[keep]
        pair_ids = torch.arange(len(ASPECT_PAIRS))[keep]
        d, K, B = self.cfg.dim, len(self.cfg.kernels), iv.shape[0]
        W, b = self.fc.weight, self.fc.bias
        Wq, Wi, Ws, Wd, Wp, We = (W[:, :d], W[:, d:2 * d], W[:, 2 * d:3 * d], W[:, 3 * d:4 * d], W[:, 4 * d:5 * d], W[:, 5 * d:])
        q = qv[0, qa]                                                     # (P, K, d)
        P = q.shape[0]
        const = q @ (Wq + Ws).T + self.pair_emb.weight.view(len(ASPECT_PAIRS), K, -1)[pair_ids] @ We.T + b  # (P, K, H)
        w_item = (Wi + Ws).T.unsqueeze(0).unsqueeze(0) + q.unsqueeze(-1) * Wp.T  # (P, K, d, H)
        w = torch.cat([w_item, Wd.T.expand(P, K, d, -1)], 2).view(P * K, 2 * d, -1)
        i = iv.permute(1, 2, 0, 3)[ia]                                    # (P, K, B, d)
        x = torch.cat([i, (i - q.unsqueeze(2)).abs()], -1).view(P * K, B, 2 * d)
        h = torch.relu(torch.bmm(x, w) + const.view(P * K, 1, -1))        # (P*K, B, H)
        valid = im[:, ia].T.repeat_interleave(K, 0).unsqueeze(-1)          # (P*K, B, 1)
        pooled = (h * valid.to(h.dtype)).amax(0)                          # (B, H)
        return self.head(pooled).squeeze(-1)

    def forward(self, q_ids: torch.Tensor, i_ids: torch.Tensor) -> torch.Tensor:
        qv, qm = self.encode_query(q_ids)
        iv, im = self.encode_item(i_ids)
        return self.interact(qv, qm, iv, im)  # type: ignore[return-value]


# ---- features: query and item aspects as token lists ------------------------------------

def query_aspects(query: Any, tokenizer: Any = None) -> dict[str, list[str]]:
    """Aspect token lists of a query: an UnderstoodQuery (entities from QU) or plain text
    (then only the text aspect, tokenized with `tokenizer`)."""
    from query_understanding.vocabulary import VERSION_WORDS

    if isinstance(query, str):
        from query_understanding.normalize import normalize

        toks = tokenizer.tokenize(normalize(query)) if tokenizer is not None else normalize(query).split()
        return {"text": toks, "version": [t for t in toks if t in VERSION_WORDS]}
    out: dict[str, list[str]] = {"text": list(query.terms)}
    for e in query.entities:
        if e.type in ("artist", "song", "show"):
            out.setdefault(e.type, []).append(e.text)
    out["version"] = [t for t in query.terms if t in VERSION_WORDS]
    return out


def item_aspects(doc: dict[str, Any], tokenizer: Any) -> dict[str, list[str]]:
    """Aspect token lists of a stored video (record fields, as in docs.jsonl)."""
    from query_understanding.normalize import normalize_doc_text
    from query_understanding.vocabulary import VERSION_WORDS

    def tok(parts: Iterable[str]) -> list[str]:
        out: list[str] = []
        for p in parts:
            out.extend(tokenizer.tokenize(normalize_doc_text(str(p))))
        return out

    title = tok([doc.get("title", "")])
    tags = tok(doc.get("tags", []) or [])
    version = CATEGORY_WORDS.get(doc.get("category", "other"), []) + [t for t in title + tags if t in VERSION_WORDS]
    return {"title": title, "artist": tok(doc.get("artists", []) or []), "song": tok(doc.get("songs", []) or []),
            "tags": tags, "uploader": tok([doc.get("uploader", "")]), "version": list(dict.fromkeys(version))}


def ids_array(aspect_lists: Sequence[dict[str, list[str]]], names: Sequence[str], max_len: dict[str, int],
              vocab: Vocab) -> np.ndarray:
    """(N, A, L) int64 unit ids, zero-padded."""
    L = max(max_len.values())
    arr = np.zeros((len(aspect_lists), len(names), L), dtype=np.int64)
    for n, asp in enumerate(aspect_lists):
        for a, name in enumerate(names):
            ids = vocab.encode(units(asp.get(name, [])), max_len[name])
            arr[n, a, : len(ids)] = ids
    return arr


# ---- persistence ------------------------------------------------------------------------

MODEL_FILE = "aspect_model.pt"
ITEM_VECTORS = "item_vectors.npy"
ITEM_MASK = "item_mask.npy"
ITEM_IDS = "item_ids.json"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the server may run as another user
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclass
class AspectBundle:
    """Everything needed to score: the model, its vocabulary and metadata."""

    model: AspectRelevanceModel
    vocab: Vocab
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> Path:
        p = Path(out_dir) / MODEL_FILE
        state = {"state_dict": self.model.state_dict(), "config": asdict(self.model.cfg),
                 "vocab": self.vocab.words, "oov_buckets": self.vocab.oov_buckets, "meta": self.meta}
        _atomic_write(p, lambda tmp: torch.save(state, tmp))
        return p

    @classmethod
    def load(cls, model_dir: str | Path) -> "AspectBundle":
        p = Path(model_dir) / MODEL_FILE
        if not p.exists():
            raise FileNotFoundError(f"no aspect model at {p}; train one with `mvsearch relevance train-aspect`")
        state = torch.load(p, map_location="cpu", weights_only=False)
        vocab = Vocab(state["vocab"], state["oov_buckets"])
        model = AspectRelevanceModel(vocab.size, AspectConfig.from_dict(state["config"]))
        model.load_state_dict(state["state_dict"])
        model.eval()
        return cls(model, vocab, state.get("meta", {}))

    @classmethod
    def new(cls, vocab: Vocab, cfg: AspectConfig | None = None, seed: int = 0) -> "AspectBundle":
        torch.manual_seed(seed)
        return cls(AspectRelevanceModel(vocab.size, cfg or AspectConfig()), vocab)


@torch.no_grad()
def encode_items(bundle: AspectBundle, docs: Sequence[dict[str, Any]], tokenizer: Any, out_dir: str | Path,
                 batch_size: int = 512, progress: bool = True) -> int:
    """Precompute the item tower for every video: `item_vectors.npy` (N, A, K, d) float16,
    `item_mask.npy` (N, A) and `item_ids.json`, written atomically next to the model."""
    from tqdm import tqdm

    model = bundle.model.eval()
    vecs, masks, ids = [], [], []
    for s in tqdm(range(0, len(docs), batch_size), desc="item tower", disable=not progress, unit="batch"):
        chunk = docs[s : s + batch_size]
        arr = ids_array([item_aspects(d, tokenizer) for d in chunk], ITEM_ASPECTS, ITEM_MAX_LEN, bundle.vocab)
        v, m = model.encode_item(torch.from_numpy(arr))
        vecs.append(v.numpy().astype(np.float16))
        masks.append(m.numpy())
        ids.extend(d["video_id"] for d in chunk)
    out = Path(out_dir)
    d = bundle.model.cfg
    V = np.concatenate(vecs) if vecs else np.zeros((0, len(ITEM_ASPECTS), len(d.kernels), d.dim), np.float16)
    M = np.concatenate(masks) if masks else np.zeros((0, len(ITEM_ASPECTS)), bool)
    _atomic_write(out / ITEM_VECTORS, lambda tmp: np.save(open(tmp, "wb"), V))
    _atomic_write(out / ITEM_MASK, lambda tmp: np.save(open(tmp, "wb"), M))
    _atomic_write(out / ITEM_IDS, lambda tmp: Path(tmp).write_text(json.dumps(ids), encoding="utf-8"))
    return len(ids)


class AspectScorer:
    """Online scoring: the query tower once per query, item vectors looked up (precomputed)
    or, for videos missing from the table, encoded on the fly; then the interaction."""

    def __init__(self, model_dir: str | Path, tokenizer: Any = None, threads: int | None = 1, name: str = "aspect"):
        if threads:
            torch.set_num_threads(threads)
        self.name = name
        self.dir = Path(model_dir)
        self.bundle = AspectBundle.load(self.dir)
        self.model = self.bundle.model.eval()
        self.tokenizer = tokenizer
        self.row: dict[str, int] = {}
        self.vectors: np.ndarray | None = None
        self.mask: np.ndarray | None = None
        if (self.dir / ITEM_VECTORS).exists():
            # float16 on disk (half the size), float32 in memory (no conversion per request)
            self.vectors = np.load(self.dir / ITEM_VECTORS).astype(np.float32)
            self.mask = np.load(self.dir / ITEM_MASK)
            self.row = {v: i for i, v in enumerate(json.loads((self.dir / ITEM_IDS).read_text(encoding="utf-8")))}

    def check_index(self, bundle_dir: str | Path | None) -> None:
        """Precomputed item vectors are keyed by video_id: if they were computed for another
        index version, ids may name other videos, so drop them (items get encoded on the fly;
        re-run `mvsearch relevance encode-aspect` to restore the fast path)."""
        meta_p = self.dir / "item_meta.json"
        if bundle_dir is None or not meta_p.exists() or self.vectors is None:
            return
        want = json.loads(meta_p.read_text(encoding="utf-8")).get("index_version", "")
        from search.indexer import read_manifest

        have = read_manifest(Path(bundle_dir)).get("version_name", "")
        if want and have and want != have:
            import logging

            logging.getLogger("mvsearch.relevance").warning(
                "aspect item vectors in %s are for index %s, not %s: encoding items on the fly", self.dir, want, have)
            self.vectors, self.mask, self.row = None, None, {}

    def _tok(self) -> Any:
        if self.tokenizer is None:
            from query_understanding.tokenize import get_tokenizer

            self.tokenizer = get_tokenizer(None)
        return self.tokenizer

    @torch.no_grad()
    def query_vectors(self, query: Any) -> tuple[torch.Tensor, torch.Tensor]:
        asp = query_aspects(query, self._tok())
        arr = ids_array([asp], QUERY_ASPECTS, QUERY_MAX_LEN, self.bundle.vocab)
        return self.model.encode_query(torch.from_numpy(arr))

    @torch.no_grad()
    def item_vectors(self, docs: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.row.get(d.get("video_id", "")) for d in docs]
        cfg = self.model.cfg
        V = torch.zeros(len(docs), len(ITEM_ASPECTS), len(cfg.kernels), cfg.dim)
        M = torch.zeros(len(docs), len(ITEM_ASPECTS), dtype=torch.bool)
        if self.vectors is not None and all(r is not None for r in rows):
            idx = np.fromiter(rows, dtype=np.int64, count=len(rows))
            return torch.from_numpy(self.vectors[idx]), torch.from_numpy(self.mask[idx])
        known = [n for n, r in enumerate(rows) if r is not None]
        if known and self.vectors is not None:
            idx = np.array([rows[n] for n in known])
            V[known] = torch.from_numpy(self.vectors[idx].astype(np.float32))
            M[known] = torch.from_numpy(self.mask[idx])
        missing = [n for n, r in enumerate(rows) if r is None]
        if missing:
            arr = ids_array([item_aspects(docs[n], self._tok()) for n in missing], ITEM_ASPECTS, ITEM_MAX_LEN, self.bundle.vocab)
            v, m = self.model.encode_item(torch.from_numpy(arr))
            V[missing], M[missing] = v, m
        return V, M

    @torch.no_grad()
    def score_query(self, query: Any, docs: Sequence[dict[str, Any]], explain: bool = False) -> Any:
        """Scores in [0, 1] of one query against many videos (and per-aspect-pair scores)."""
        if not docs:
            return (np.zeros(0), np.zeros((0, len(ASPECT_PAIRS)))) if explain else np.zeros(0)
        qv, qm = self.query_vectors(query)
        iv, im = self.item_vectors(docs)
        if explain:
            logit, pairs = self.model.interact(qv, qm, iv, im, return_pairs=True)
            return torch.sigmoid(logit).numpy(), torch.sigmoid(pairs).numpy()
        return torch.sigmoid(self.model.interact(qv, qm, iv, im)).numpy()  # type: ignore[arg-type]

    def score_pairs(self, queries: Sequence[Any], docs: Sequence[dict[str, Any]]) -> np.ndarray:
        """One score per (query, doc) pair; pairs of the same query share its tower pass."""
        out = np.zeros(len(queries), dtype=np.float64)
        groups: dict[Any, list[int]] = {}
        for n, q in enumerate(queries):
            groups.setdefault(q if isinstance(q, str) else id(q), []).append(n)
        for _, idx in groups.items():
            out[idx] = self.score_query(queries[idx[0]], [docs[n] for n in idx])
        return out


__all__ = ["AspectRelevanceModel", "AspectConfig", "AspectBundle", "AspectScorer", "Vocab", "ConvSelfAttention",
           "query_aspects", "item_aspects", "ids_array", "units", "encode_items",
           "QUERY_ASPECTS", "ITEM_ASPECTS", "ASPECT_PAIRS", "QUERY_MAX_LEN", "ITEM_MAX_LEN"]


# ---- scorer registry (relevance/scorers.py) ------------------------------------------------

DEFAULT_MODEL_DIRS = {"aspect": "var/models/aspect", "aspect_ft": "var/models/aspect_ft"}


def _scorer_factory(name: str):
    def factory(ctx: Any) -> AspectScorer:
        from .scorers import ScorerUnavailable

        params = ctx.scorer_params(name)
        model_dir = Path(params.get("model") or DEFAULT_MODEL_DIRS[name])
        if not (model_dir / MODEL_FILE).exists():
            how = ("mvsearch relevance train-aspect" if name == "aspect" else "mvsearch relevance finetune-aspect")
            raise ScorerUnavailable(f"no aspect model in {model_dir} (train it with `{how}`, or pass --scorer-param {name}.model=DIR)")
        key = f"aspect_scorer:{model_dir.resolve()}"
        if key not in ctx.cache:
            tok = None
            if ctx.bundle_dir is not None and (Path(ctx.bundle_dir) / "dictionary.txt").exists():
                from query_understanding.tokenize import get_tokenizer

                tok = get_tokenizer(Path(ctx.bundle_dir) / "dictionary.txt")
            sc = AspectScorer(model_dir, tok, threads=int(params.get("threads", 1)), name=name)
            sc.check_index(ctx.bundle_dir)
            ctx.cache[key] = sc
        return ctx.cache[key]
    return factory


def _register() -> None:
    from .scorers import register_scorer

    for n in DEFAULT_MODEL_DIRS:
        register_scorer(n, _scorer_factory(n))


_register()
