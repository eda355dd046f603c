"""One trainer for every model of expanded recall (MLM pretraining, the two towers, the
rewrite discriminator): a fixed seed, AdamW with linear warmup/decay, progress, periodic
checkpoints and resume. A model brings only `loss(batch) -> tensor` and a batch sampler.

Checkpoints are torch state dicts (model + optimizer + scheduler + step + RNG state) in
`<out>/checkpoints/step-N.pt`, written to a temp file then renamed, so a run killed at any
moment resumes from the last complete checkpoint with the same data order."""
from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.06            # share of steps with linear warmup
    seed: int = 7
    threads: int = 1                # the machine is shared: one core unless asked
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 50
    grad_clip: float = 1.0
    show_progress: bool = True


def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _latest_checkpoint(ckpt_dir: Path) -> Path | None:
    if not ckpt_dir.is_dir():
        return None
    cks = sorted(ckpt_dir.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    return cks[-1] if cks else None


def _save_checkpoint(ckpt_dir: Path, step: int, state: dict[str, Any], keep: int) -> None:
    import torch

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=ckpt_dir, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, ckpt_dir / f"step-{step}.pt")
    cks = sorted(ckpt_dir.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    for p in cks[:-keep]:
        p.unlink(missing_ok=True)


def train(model: Any, loss_fn: Callable[[Any, int], Any], sample_batch: Callable[[np.random.Generator, int], Any],
          cfg: TrainConfig, ckpt_dir: Path | None = None, resume: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run `cfg.steps` optimizer steps of `loss_fn(sample_batch(rng, step), step)`.
    Returns a small history (losses per log window, seconds, steps/s)."""
    import torch
    from tqdm import tqdm

    torch.set_num_threads(max(1, int(cfg.threads)))
    set_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    warm = max(1, int(cfg.steps * cfg.warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (cfg.steps - s) / max(1, cfg.steps - warm)))
    rng = np.random.default_rng(cfg.seed)
    start = 0
    history: dict[str, Any] = {"loss": [], "resumed_from": None}
    ck = _latest_checkpoint(ckpt_dir) if (ckpt_dir and resume) else None
    if ck is not None:
        state = torch.load(ck, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = int(state["step"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        history = state.get("history", history)
        history["resumed_from"] = start
        history["seconds_total"] = history.get("seconds_at_checkpoint", 0.0)
        log(f"resumed from {ck} (step {start})")
    model.train()
    t0 = time.time()
    window: list[float] = []
    bar = tqdm(total=cfg.steps, initial=start, disable=not cfg.show_progress, desc="train", mininterval=2.0)
    for step in range(start, cfg.steps):
        batch = sample_batch(rng, step)
        loss = loss_fn(batch, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        window.append(float(loss.detach()))
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            history["loss"].append([step + 1, round(float(np.mean(window)), 5)])
            bar.set_postfix(loss=f"{np.mean(window):.4f}")
            window = []
        bar.update(1)
        if ckpt_dir and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            history["seconds_at_checkpoint"] = round(float(history.get("seconds_total", 0.0)) + time.time() - t0, 1)
            _save_checkpoint(ckpt_dir, step + 1, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                  "scheduler": sched.state_dict(), "step": step + 1,
                                                  "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                                                  "history": history}, cfg.keep_checkpoints)
    bar.close()
    secs = time.time() - t0
    done = cfg.steps - start
    # totals over every run of this training (a resumed run adds to what came before)
    history["seconds_total"] = round(float(history.get("seconds_total", 0.0)) + secs, 1)
    history["steps_total"] = cfg.steps
    history.update(seconds=round(secs, 1), steps_run=done, steps_per_s=round(done / secs, 3) if secs > 0 else None)
    model.eval()
    return history
