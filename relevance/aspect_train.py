"""Training, fine-tuning and item-vector precomputation for the aspect relevance model.

    mvsearch relevance train-aspect --logs impressions.jsonl --index-dir IDX --out DIR [--epochs 2 --seed 0 --threads 1]
    mvsearch relevance finetune-aspect --model DIR --labels qrels.jsonl --out DIR2 [--index-dir IDX]
    mvsearch relevance encode-aspect --model DIR --index-dir IDX      (re-encode items for another index)

One trainer (`fit`) serves log training, fine-tuning and the QBQTC benchmark: examples are
(query index, item index, target) over de-duplicated query and item id arrays, the loss is
binary cross-entropy against soft targets (tiers 1 / 0.5 / 0, grades 1 / .75 / .25 / 0), so
the pointwise loss keeps the tier order. Checkpoints (model, optimizer, epoch, RNG) go to
DIR/checkpoint.pt after every epoch and every `checkpoint_every` steps; `--resume` continues.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .aspect_model import (ITEM_ASPECTS, ITEM_MAX_LEN, QUERY_ASPECTS, QUERY_MAX_LEN, AspectBundle, AspectConfig,
                           Vocab, _atomic_write, encode_items, ids_array, item_aspects, query_aspects, units)

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainParams:
    epochs: int = 2
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-5
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 500   # steps
    max_seconds: float = 0.0      # 0 = no limit; else stop (and checkpoint) after this long
    progress: bool = True


@dataclass
class Encoded:
    """De-duplicated id arrays and the examples pointing into them."""

    q_ids: np.ndarray   # (Nq, Aq, L) int32
    i_ids: np.ndarray   # (Ni, Ai, L) int32
    qi: np.ndarray      # (N,) query row per example
    ii: np.ndarray      # (N,) item row per example
    target: np.ndarray  # (N,) float32
    kind: list[str] = field(default_factory=list)


def encode_examples(vocab: Vocab, q_aspects: Sequence[dict[str, list[str]]], i_aspects: Sequence[dict[str, list[str]]],
                    qi: Sequence[int], ii: Sequence[int], target: Sequence[float], kind: Sequence[str] = ()) -> Encoded:
    return Encoded(ids_array(q_aspects, QUERY_ASPECTS, QUERY_MAX_LEN, vocab).astype(np.int32),
                   ids_array(i_aspects, ITEM_ASPECTS, ITEM_MAX_LEN, vocab).astype(np.int32),
                   np.asarray(qi, np.int64), np.asarray(ii, np.int64), np.asarray(target, np.float32), list(kind))


def build_vocab(q_aspects: Sequence[dict[str, list[str]]], i_aspects: Sequence[dict[str, list[str]]], min_count: int = 2) -> Vocab:
    def lists():
        for a in list(q_aspects) + list(i_aspects):
            for toks in a.values():
                yield units(toks)
    return Vocab.build(lists(), min_count=min_count)


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


@torch.no_grad()
def predict(model: nn.Module, data: Encoded, batch_size: int = 512) -> np.ndarray:
    model.eval()
    out = []
    for s in range(0, len(data.qi), batch_size):
        q = torch.from_numpy(data.q_ids[data.qi[s : s + batch_size]].astype(np.int64))
        i = torch.from_numpy(data.i_ids[data.ii[s : s + batch_size]].astype(np.int64))
        out.append(torch.sigmoid(model(q, i)).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def fit(bundle: AspectBundle, train: Encoded, tp: TrainParams, ckpt_dir: Path | None = None, resume: bool = False,
        on_epoch: Callable[[int, AspectBundle], dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """Train `bundle.model` in place on `train`; returns one log line per epoch."""
    from tqdm import tqdm

    torch.set_num_threads(max(1, tp.threads))
    torch.manual_seed(tp.seed)
    np.random.seed(tp.seed)
    random.seed(tp.seed)
    model = bundle.model
    opt = torch.optim.AdamW(model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    start_epoch, start_step, history = 0, 0, []
    ck = ckpt_dir / CHECKPOINT if ckpt_dir else None
    if resume and ck and ck.exists():
        state = torch.load(ck, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, start_step, history = state["epoch"], state["step"], state["history"]
        _set_rng_state(state["rng"])
        print(f"resumed from {ck}: epoch {start_epoch + 1}, step {start_step}")
    n = len(train.qi)
    t_start = time.perf_counter()

    def save_ckpt(epoch: int, step: int) -> None:
        if ck is None:
            return
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
                 "history": history, "rng": _rng_state(), "params": asdict(tp)}
        _atomic_write(ck, lambda tmp: torch.save(state, tmp))

    for epoch in range(start_epoch, tp.epochs):
        # The order of an epoch is a function of (seed, epoch) only, so a resumed run sees
        # the same batches as an uninterrupted one.
        order = np.random.default_rng(tp.seed * 1000 + epoch).permutation(n)
        steps = (n + tp.batch_size - 1) // tp.batch_size
        first = start_step if epoch == start_epoch else 0
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(range(first, steps), desc=f"epoch {epoch + 1}/{tp.epochs}", disable=not tp.progress, unit="batch", mininterval=1)
        stopped = False
        for step in bar:
            idx = order[step * tp.batch_size : (step + 1) * tp.batch_size]
            q = torch.from_numpy(train.q_ids[train.qi[idx]].astype(np.int64))
            i = torch.from_numpy(train.i_ids[train.ii[idx]].astype(np.int64))
            y = torch.from_numpy(train.target[idx])
            loss = loss_fn(model(q, i), y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{total / max(seen, 1):.4f}")
            if tp.checkpoint_every and (step + 1) % tp.checkpoint_every == 0:
                save_ckpt(epoch, step + 1)
            if tp.max_seconds and time.perf_counter() - t_start > tp.max_seconds:
                save_ckpt(epoch, step + 1)
                stopped = True
                break
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": round(total / max(seen, 1), 5), "examples": seen,
                               "seconds": round(time.perf_counter() - t_start, 1)}
        if on_epoch is not None:
            row.update(on_epoch(epoch, bundle))
            model.train()
        history.append(row)
        print("  " + ", ".join(f"{k} {v}" for k, v in row.items()))
        if stopped:
            print(f"stopped after {tp.max_seconds:.0f}s (max_seconds); resume with --resume")
            break
        save_ckpt(epoch + 1, 0)
    model.eval()
    return history


# ---- the log-trained model ----------------------------------------------------------------

def _open_bundle(index_dir: str | Path, config: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any], Any, Any]:
    """(bundle dir, manifest, query understanding stage, tokenizer) as the pipeline builds them."""
    from query_understanding.tokenize import get_tokenizer
    from search.config import load_config
    from search.indexer import current_bundle, read_manifest
    from search.pipeline import STAGES, PipelineContext

    cfg = config or load_config(None, {"engine": {"index_dir": str(index_dir)}})
    bundle = current_bundle(index_dir)
    manifest = read_manifest(bundle)
    uc = cfg.get("understanding", {})
    qu = STAGES["understanding"][uc.get("impl", "baseline")](uc.get("params", {}), PipelineContext(bundle, manifest, cfg))
    return bundle, manifest, qu, get_tokenizer(bundle / "dictionary.txt")


def all_docs(bundle: Path) -> dict[str, dict[str, Any]]:
    from search.documents import DocStore

    store = DocStore(bundle / "docstore.sqlite")
    try:
        ids = list(store.iter_ids())
        return store.get_many(ids)
    finally:
        store.close()


def auc_on_labels(scores: np.ndarray, grades: np.ndarray) -> float | None:
    """The article's AUC: grades 3, 2 positive, 0 negative, 1 left out (sklearn)."""
    from sklearn.metrics import roc_auc_score

    m = grades != 1
    y = (grades[m] >= 2).astype(int)
    if len(set(y.tolist())) < 2:
        return None
    return float(roc_auc_score(y, scores[m]))


class LabelSet:
    """A labelled set encoded for a given vocabulary (queries understood once)."""

    def __init__(self, rows: Sequence[Any], docs: dict[str, dict[str, Any]], understand: Callable[[str], Any], tokenizer: Any):
        rows = [r for r in rows if r.video_id in docs]
        self.rows = rows
        self.qs = sorted({r.query for r in rows})
        self.vids = sorted({r.video_id for r in rows})
        self.q_asp = [query_aspects(understand(q), tokenizer) for q in self.qs]
        self.i_asp = [item_aspects(docs[v], tokenizer) for v in self.vids]
        qpos = {q: n for n, q in enumerate(self.qs)}
        vpos = {v: n for n, v in enumerate(self.vids)}
        self.qi = [qpos[r.query] for r in rows]
        self.ii = [vpos[r.video_id] for r in rows]
        self.grades = np.array([r.grade for r in rows])

    def encoded(self, vocab: Vocab, targets: Sequence[float] | None = None) -> Encoded:
        t = targets if targets is not None else [0.0] * len(self.rows)
        return encode_examples(vocab, self.q_asp, self.i_asp, self.qi, self.ii, t)


def train_aspect(logs: str | Path, index_dir: str | Path, out: str | Path, tp: TrainParams, resume: bool = False,
                 eval_labels: str | Path | None = None, max_queries: int | None = None, label_seed: int = 7,
                 model_cfg: AspectConfig | None = None) -> dict[str, Any]:
    from search.kb import load_kb

    from .aspect_data import (EntitySwapper, TierParams, aggregate_clicks, build_training_set, load_clicks,
                              save_clicks, tier_pairs)

    torch.set_num_threads(max(1, tp.threads))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    bundle_dir, manifest, qu, tok = _open_bundle(index_dir)
    from query_understanding import QueryInput

    clicks_path = out / "clicks_train.json"
    if clicks_path.exists():
        stats = load_clicks(clicks_path)
        print(f"click statistics from {clicks_path}")
    else:
        stats = aggregate_clicks(logs, "train", progress=tp.progress)
        save_clicks(stats, clicks_path)
    tparams = TierParams()
    tiered = tier_pairs(stats, tparams)
    docs = all_docs(bundle_dir)
    q_cache: dict[str, Any] = {}

    def understood(q: str) -> Any:
        u = q_cache.get(q)
        if u is None:
            u = q_cache[q] = qu.run(QueryInput(q))
        return u

    rng = random.Random(tp.seed)
    ts = build_training_set(tiered, docs, lambda q: query_aspects(understood(q), tok), EntitySwapper(load_kb(), rng), rng,
                            max_queries=max_queries)
    print(f"training set: {len(ts.examples)} examples from {len({e.query for e in ts.examples})} queries "
          f"({', '.join(f'{k} {v}' for k, v in sorted(ts.counts.items()))}) in {time.perf_counter() - t0:.0f}s")
    # de-duplicate queries and items (hard negatives are new items)
    qs = sorted({e.query for e in ts.examples})
    qpos = {q: n for n, q in enumerate(qs)}
    item_keys: dict[str, int] = {}
    item_docs: list[dict[str, Any]] = []
    ii = []
    for e in ts.examples:
        k = e.doc["video_id"]
        if k not in item_keys:
            item_keys[k] = len(item_docs)
            item_docs.append(e.doc)
        ii.append(item_keys[k])
    q_asp = [query_aspects(understood(q), tok) for q in qs]
    i_asp = [item_aspects(d, tok) for d in item_docs]
    model_path = out / "aspect_model.pt"
    if resume and (out / CHECKPOINT).exists() and (out / "vocab.json").exists():
        vocab = Vocab(json.loads((out / "vocab.json").read_text(encoding="utf-8")))
    else:
        vocab = build_vocab(q_asp, i_asp)
        _atomic_write(out / "vocab.json", lambda tmp: Path(tmp).write_text(json.dumps(vocab.words, ensure_ascii=False), encoding="utf-8"))
    data = encode_examples(vocab, q_asp, i_asp, [qpos[e.query] for e in ts.examples], ii,
                           [e.target for e in ts.examples], [e.kind for e in ts.examples])
    print(f"vocabulary: {len(vocab.words)} words/characters + {vocab.oov_buckets} OOV buckets; "
          f"{len(qs)} queries, {len(item_docs)} items")
    bundle = AspectBundle.new(vocab, model_cfg, seed=tp.seed)

    on_epoch = None
    if eval_labels:
        from .evaluation import load_labels, select_split

        lab = LabelSet(select_split(load_labels(eval_labels), "fit", label_seed), docs, understood, tok)
        lab_enc = lab.encoded(vocab)

        def on_epoch(epoch: int, b: AspectBundle) -> dict[str, float]:
            auc = auc_on_labels(predict(b.model, lab_enc), lab.grades)
            return {"auc_labels_fit": round(auc, 4) if auc is not None else float("nan")}

    history = fit(bundle, data, tp, out, resume, on_epoch)
    bundle.meta = {"trained_on": str(logs), "index_version": manifest.get("version_name", ""), "examples": len(ts.examples),
                   "counts": ts.counts, "tiers": asdict(tparams), "params": asdict(tp), "history": history,
                   "kind": "logs", "seconds": round(time.perf_counter() - t0, 1)}
    bundle.save(out)
    n = write_item_vectors(bundle, bundle_dir, manifest, out, tok, docs, progress=tp.progress)
    print(f"model → {model_path}; item vectors for {n} videos → {out}")
    return bundle.meta


def write_item_vectors(bundle: AspectBundle, bundle_dir: Path, manifest: dict[str, Any], out: Path, tok: Any,
                       docs: dict[str, dict[str, Any]] | None = None, progress: bool = True) -> int:
    docs = docs if docs is not None else all_docs(bundle_dir)
    n = encode_items(bundle, [docs[k] for k in sorted(docs)], tok, out, progress=progress)
    meta = {"index_version": manifest.get("version_name", ""), "index_dir": str(bundle_dir), "videos": n}
    _atomic_write(out / "item_meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta), encoding="utf-8"))
    return n


def finetune_aspect(model_dir: str | Path, labels: str | Path, out: str | Path, index_dir: str | Path | None,
                    tp: TrainParams, label_seed: int = 7) -> dict[str, Any]:
    """Fine-tune on the `fit` split of a human-labelled set (the `heldout` split — same
    hash as `mvsearch eval relevance --split heldout` — is never seen), targets by grade."""
    from .aspect_data import GRADE_TARGET
    from .evaluation import load_labels, select_split

    torch.set_num_threads(max(1, tp.threads))
    bundle = AspectBundle.load(model_dir)
    if index_dir is None:
        meta_p = Path(model_dir) / "item_meta.json"
        if not meta_p.exists():
            raise ValueError("give --index-dir (the model directory names no index)")
        index_dir = Path(json.loads(meta_p.read_text())["index_dir"]).parent.parent
    bundle_dir, manifest, qu, tok = _open_bundle(index_dir)
    from query_understanding import QueryInput

    docs = all_docs(bundle_dir)
    cache: dict[str, Any] = {}

    def understood(q: str) -> Any:
        if q not in cache:
            cache[q] = qu.run(QueryInput(q))
        return cache[q]

    pairs = load_labels(labels)
    fit_rows, held_rows = select_split(pairs, "fit", label_seed), select_split(pairs, "heldout", label_seed)
    missing = sum(1 for r in pairs if r.video_id not in docs)
    if missing:
        print(f"warning: {missing} labelled videos are not in the index and are skipped")
    fit_set = LabelSet(fit_rows, docs, understood, tok)
    held_set = LabelSet(held_rows, docs, understood, tok)
    if not fit_set.rows:
        raise ValueError(f"{labels}: no labelled pairs of the fit split are in the index {bundle_dir}")
    train = fit_set.encoded(bundle.vocab, [GRADE_TARGET[int(g)] for g in fit_set.grades])
    held = held_set.encoded(bundle.vocab)
    before = auc_on_labels(predict(bundle.model, held), held_set.grades) if held_set.rows else None

    def on_epoch(epoch: int, b: AspectBundle) -> dict[str, float]:
        auc = auc_on_labels(predict(b.model, train), fit_set.grades)
        return {"auc_fit": round(auc, 4) if auc is not None else float("nan")}

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    history = fit(bundle, train, tp, None, False, on_epoch)
    after = auc_on_labels(predict(bundle.model, held), held_set.grades) if held_set.rows else None
    bundle.meta = {**bundle.meta, "kind": "finetuned", "base_model": str(model_dir), "labels": str(labels),
                   "label_split_seed": label_seed, "fit_pairs": len(fit_set.rows), "heldout_pairs": len(held_set.rows),
                   "heldout_auc_before": before, "heldout_auc_after": after, "finetune_params": asdict(tp),
                   "finetune_history": history}
    bundle.save(out)
    n = write_item_vectors(bundle, bundle_dir, manifest, out, tok, docs, progress=tp.progress)
    print(f"fine-tuned on {len(fit_set.rows)} pairs (fit split, seed {label_seed}); held-out AUC (grades 3,2 vs 0) "
          f"{before if before is None else round(before, 4)} → {after if after is None else round(after, 4)} on {len(held_set.rows)} pairs")
    print(f"model → {out / 'aspect_model.pt'}; item vectors for {n} videos")
    return bundle.meta


__all__ = ["TrainParams", "Encoded", "encode_examples", "build_vocab", "fit", "predict", "train_aspect", "finetune_aspect",
           "write_item_vectors", "auc_on_labels", "LabelSet", "all_docs"]


# ---- commands -------------------------------------------------------------------------------

def _tp(args: Any) -> TrainParams:
    return TrainParams(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, threads=args.threads,
                       max_seconds=getattr(args, "max_minutes", 0.0) * 60, progress=not args.quiet)


def _index_dir(args: Any) -> str | None:
    if getattr(args, "index_dir", None) or getattr(args, "config", None):
        from search.cli import _config_from

        return _config_from(args)["engine"]["index_dir"]
    return None


def cmd_train_aspect(args: Any) -> int:
    if not Path(args.logs).exists():
        raise FileNotFoundError(f"--logs {args.logs} does not exist")
    idx = _index_dir(args)
    if idx is None:
        raise ValueError("give --index-dir (the index bundle whose videos the logs refer to)")
    train_aspect(args.logs, idx, args.out, _tp(args), resume=args.resume, eval_labels=args.eval_labels,
                 max_queries=args.max_queries)
    return 0


def cmd_finetune_aspect(args: Any) -> int:
    finetune_aspect(args.model, args.labels, args.out, _index_dir(args), _tp(args), label_seed=args.split_seed)
    return 0


def cmd_encode_aspect(args: Any) -> int:
    idx = _index_dir(args)
    if idx is None:
        raise ValueError("give --index-dir")
    bundle = AspectBundle.load(args.model)
    torch.set_num_threads(max(1, args.threads))
    bundle_dir, manifest, _qu, tok = _open_bundle(idx)
    n = write_item_vectors(bundle, bundle_dir, manifest, Path(args.model), tok, progress=not args.quiet)
    print(f"item vectors for {n} videos of {manifest.get('version_name')} → {args.model}")
    return 0


def _train_args(p: Any, epochs: int, lr: float, batch: int) -> None:
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--batch-size", type=int, default=batch)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_aspect_commands(rsub: Any, engine_args: Callable[[Any], None]) -> None:
    t = rsub.add_parser("train-aspect", help="train the aspect relevance model on tiered-CTR data from the search logs")
    t.add_argument("--logs", required=True, help="impressions JSONL (only split=train is read)")
    t.add_argument("--out", required=True, help="model directory (aspect_model.pt, item vectors, checkpoint.pt)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--eval-labels", help="labelled pairs: print the AUC on their fit split after every epoch")
    t.add_argument("--max-queries", type=int, help="use at most this many logged queries (quick runs)")
    t.add_argument("--max-minutes", type=float, default=0.0, help="stop after this long with a checkpoint (0 = no limit)")
    _train_args(t, 2, 2e-3, 128)
    engine_args(t)
    t.set_defaults(func=cmd_train_aspect)

    f = rsub.add_parser("finetune-aspect", help="fine-tune the aspect model on human-labelled pairs (the fit split)")
    f.add_argument("--model", required=True, help="trained model directory")
    f.add_argument("--labels", required=True, help='qrels JSONL {"qid","query","video_id","grade"} (annotation exports too)')
    f.add_argument("--out", required=True, help="directory of the fine-tuned model")
    f.add_argument("--split-seed", type=int, default=7, help="query split seed (as `eval relevance --seed`)")
    _train_args(f, 4, 5e-4, 32)
    engine_args(f)
    f.set_defaults(func=cmd_finetune_aspect)

    e = rsub.add_parser("encode-aspect", help="precompute the item tower for every video of an index")
    e.add_argument("--model", required=True)
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--quiet", action="store_true")
    engine_args(e)
    e.set_defaults(func=cmd_encode_aspect)
