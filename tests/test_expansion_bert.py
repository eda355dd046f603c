"""Small BERT pretraining: a few MLM steps on a toy corpus save with save_pretrained, reload
from the local directory only, and a killed run resumes from its checkpoint."""
from __future__ import annotations

import json

import pytest

import torch  # noqa: E402  (a dependency: a failed import is a failure, not a skip)

TOY = [f"{a} {s} {k}" for a in ("周杰伦", "田馥甄", "hebe", "jay chou", "林俊杰") for s in ("晴天", "小幸运", "七里香", "江南", "她说")
       for k in ("live", "现场", "mv", "翻唱 cover", "钢琴版")]


def test_pretrain_saves_and_reloads(tmp_path):
    from search.expansion.bert import BertSize, load_mlm, load_tokenizer, pretrain
    from search.expansion.trainer import TrainConfig

    out = tmp_path / "bert"
    size = BertSize(vocab_size=300, layers=1, hidden=32, heads=2, intermediate=64, max_len=24)
    rep = pretrain(TOY, out, size, TrainConfig(steps=6, lr=1e-3, checkpoint_every=3, show_progress=False), batch_size=8,
                   log=lambda *_: None)
    assert (out / "config.json").exists() and (out / "pretrain_report.json").exists()
    assert rep["history"]["steps_run"] == 6
    tok = load_tokenizer(out)
    # Chinese split per character, latin kept as word pieces
    pieces = tok.tokenize("周杰伦 晴天 live")
    assert pieces[:5] == ["周", "杰", "伦", "晴", "天"] and "live" in pieces
    model = load_mlm(out)
    enc = tok(["田馥甄 小幸运"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[-1] == tok.vocab_size
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 32


def test_pretrain_resumes_from_checkpoint(tmp_path):
    from search.expansion.bert import BertSize, pretrain
    from search.expansion.trainer import TrainConfig

    out = tmp_path / "bert"
    size = BertSize(vocab_size=300, layers=1, hidden=32, heads=2, intermediate=64, max_len=24)
    pretrain(TOY, out, size, TrainConfig(steps=4, checkpoint_every=2, show_progress=False), batch_size=8, log=lambda *_: None)
    ck = sorted((tmp_path / "bert.work" / "checkpoints").glob("step-*.pt"))
    assert [p.name for p in ck] == ["step-2.pt", "step-4.pt"]
    # a longer run picks up at step 4 and runs only the remaining steps
    rep = pretrain(TOY, out, size, TrainConfig(steps=6, checkpoint_every=2, show_progress=False), batch_size=8, log=lambda *_: None)
    assert rep["history"]["resumed_from"] == 4 and rep["history"]["steps_run"] == 2


def test_pretrain_rejects_empty_corpus(tmp_path):
    from search.expansion.bert import pretrain

    with pytest.raises(ValueError):
        pretrain([], tmp_path / "bert")
