"""Our own small BERT: a WordPiece vocabulary built from our texts (Chinese is split per
character by the BERT pre-tokenizer, latin words into word pieces) and masked-language-model
pretraining with `transformers` (BertForMaskedLM).

Why our own: no model hub at run time, and a 4-layer/256-wide model pretrains on two CPU
cores in minutes while still learning that `田馥甄`, `hebe` and `S.H.E` live in the same
contexts. A team with a larger Chinese checkpoint points `[expansion] bert_dir` at it;
everything here loads with `from_pretrained(local_dir)` only (`local_files_only=True`)."""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import replace_dir
from .trainer import TrainConfig, set_seed, train

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class BertSize:
    vocab_size: int = 12000
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    intermediate: int = 1024
    max_len: int = 64


def build_vocab(lines: list[str], out_dir: Path, vocab_size: int = 12000, min_frequency: int = 2):
    """Train a WordPiece vocabulary on our lines; returns a BertTokenizerFast saved in out_dir."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    wp = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True)
    wp.train_from_iterator(lines, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL,
                           limit_alphabet=8000, show_progress=False)
    wp.save_model(str(out_dir))  # writes vocab.txt
    tok = BertTokenizerFast(vocab_file=str(out_dir / "vocab.txt"), do_lower_case=True, tokenize_chinese_chars=True,
                            strip_accents=False)
    tok.save_pretrained(str(out_dir))
    return tok


def load_tokenizer(model_dir: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)


def load_mlm(model_dir: str | Path):
    from transformers import BertForMaskedLM

    return BertForMaskedLM.from_pretrained(str(model_dir), local_files_only=True)


def encode_corpus(tok, lines: list[str], max_len: int) -> list[np.ndarray]:
    enc = tok(lines, truncation=True, max_length=max_len, add_special_tokens=True)["input_ids"]
    return [np.asarray(ids, dtype=np.int64) for ids in enc if len(ids) > 3]


def pad_batch(seqs: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    L = max(len(s) for s in seqs)
    ids = np.full((len(seqs), L), pad_id, dtype=np.int64)
    att = np.zeros((len(seqs), L), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        att[i, : len(s)] = 1
    return ids, att


def mask_tokens(ids: np.ndarray, att: np.ndarray, tok, rng: np.random.Generator, prob: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """BERT's 80/10/10 masking over non-special tokens; labels -100 where not predicted."""
    special = np.isin(ids, [tok.cls_token_id, tok.sep_token_id, tok.pad_token_id])
    chosen = (rng.random(ids.shape) < prob) & ~special & (att == 1)
    # at least one prediction per row, or short queries teach nothing
    for r in np.where(~chosen.any(axis=1))[0]:
        cand = np.where(~special[r])[0]
        if len(cand):
            chosen[r, rng.choice(cand)] = True
    labels = np.where(chosen, ids, -100)
    out = ids.copy()
    u = rng.random(ids.shape)
    out[chosen & (u < 0.8)] = tok.mask_token_id
    rand = chosen & (u >= 0.8) & (u < 0.9)
    out[rand] = rng.integers(len(SPECIAL), tok.vocab_size, size=int(rand.sum()))
    return out, labels


def pretrain(lines: list[str], out: str | Path, size: BertSize | None = None, train_cfg: TrainConfig | None = None,
             batch_size: int = 64, resume: bool = True, corpus_report: dict[str, Any] | None = None,
             log=print) -> dict[str, Any]:
    """Vocabulary + MLM pretraining; saves model and tokenizer with save_pretrained into `out`.
    Work files (vocabulary, checkpoints) live in `<out>.work/` so a killed run resumes."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    size = size or BertSize()
    tc = train_cfg or TrainConfig(steps=3000, lr=5e-4)
    out = Path(out)
    work = out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    if not lines:
        raise ValueError("empty pretraining corpus")
    set_seed(tc.seed)
    t0 = time.time()
    if (work / "tokenizer" / "tokenizer_config.json").exists() and resume:
        tok = load_tokenizer(work / "tokenizer")
    else:
        tok = build_vocab(lines, work / "tokenizer", size.vocab_size)
    t_vocab = time.time() - t0
    seqs = encode_corpus(tok, lines, size.max_len)
    if not seqs:
        raise ValueError("no pretraining line is longer than two tokens")
    log(f"corpus: {len(lines)} lines, {len(seqs)} sequences, mean {np.mean([len(s) for s in seqs]):.1f} tokens; "
        f"vocabulary {tok.vocab_size} (built in {t_vocab:.1f}s)")
    torch.set_num_threads(max(1, tc.threads))
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=size.hidden, num_hidden_layers=size.layers,
                        num_attention_heads=size.heads, intermediate_size=size.intermediate,
                        max_position_embeddings=size.max_len, pad_token_id=tok.pad_token_id)
    model = BertForMaskedLM(config)

    def sample(rng: np.random.Generator, step: int):
        idx = rng.integers(0, len(seqs), size=batch_size)
        ids, att = pad_batch([seqs[i] for i in idx], tok.pad_token_id)
        inp, labels = mask_tokens(ids, att, tok, rng)
        return torch.from_numpy(inp), torch.from_numpy(att), torch.from_numpy(labels)

    def loss_fn(batch, step):
        # The output layer only on masked positions: the vocabulary projection over every
        # position is most of the compute at this size, and only ~15% of it is ever used.
        inp, att, labels = batch
        hidden = model.bert(input_ids=inp, attention_mask=att).last_hidden_state
        sel = labels != -100
        logits = model.cls(hidden[sel])
        return torch.nn.functional.cross_entropy(logits, labels[sel])

    hist = train(model, loss_fn, sample, tc, ckpt_dir=work / "checkpoints", resume=resume, log=log)
    held = _heldout_mlm_accuracy(model, tok, seqs, tc.seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else None))
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    report = {"size": asdict(size), "train": asdict(tc), "batch_size": batch_size, "sequences": len(seqs),
              "corpus": corpus_report or {}, "history": hist, "heldout_masked_accuracy": held,
              "seconds_total": round(time.time() - t0, 1)}
    (tmp / "pretrain_report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    replace_dir(tmp, out)
    return report


def _heldout_mlm_accuracy(model, tok, seqs: list[np.ndarray], seed: int, n: int = 512) -> float:
    """Masked-token accuracy on a fixed sample (a sanity figure: random init scores ~0)."""
    import torch

    rng = np.random.default_rng(seed + 1)
    idx = rng.choice(len(seqs), size=min(n, len(seqs)), replace=False)
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(idx), 64):
            ids, att = pad_batch([seqs[j] for j in idx[i : i + 64]], tok.pad_token_id)
            inp, labels = mask_tokens(ids, att, tok, rng)
            logits = model(input_ids=torch.from_numpy(inp), attention_mask=torch.from_numpy(att)).logits
            pred = logits.argmax(-1).numpy()
            m = labels != -100
            correct += int((pred[m] == labels[m]).sum())
            total += int(m.sum())
    return round(correct / max(1, total), 4)
