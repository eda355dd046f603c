"""Expanded-recall timings: MLM pretraining step time at the default small-BERT size
(extrapolated to the default step count), and the two-tower query vector latency on one core.

    python benchmarks/bench_expansion.py [--two-tower var/models/two-tower] [--threads 1 2] [--steps 20]

Prints a table and writes benchmarks/results/expansion.json. The machine's load average is
recorded beside every figure: on a shared machine the step time is an upper bound.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bench_pretrain_step(threads: int, steps: int, batch: int, seq_len: int, default_steps: int) -> dict:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from search.expansion.bert import BertSize

    size = BertSize()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=size.vocab_size, hidden_size=size.hidden, num_hidden_layers=size.layers,
                                       num_attention_heads=size.heads, intermediate_size=size.intermediate,
                                       max_position_embeddings=size.max_len))
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    ids = torch.randint(5, size.vocab_size, (batch, seq_len))
    att = torch.ones_like(ids)
    labels = torch.where(torch.rand(batch, seq_len) < 0.15, ids, torch.full_like(ids, -100))
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        # the same loss as search/expansion/bert.py: output layer on masked positions only
        h = model.bert(input_ids=ids, attention_mask=att).last_hidden_state
        sel = labels != -100
        loss = torch.nn.functional.cross_entropy(model.cls(h[sel]), labels[sel])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    s = float(np.median(times))
    return {"threads": threads, "batch": batch, "seq_len": seq_len, "s_per_step_median": round(s, 3),
            "default_steps": default_steps, "extrapolated_minutes": round(s * default_steps / 60, 1),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def bench_query_vector(model_dir: str, n: int = 2000) -> dict:
    from search.expansion.two_tower import TwoTowerEmbedder

    emb = TwoTowerEmbedder.load(model_dir)
    qs = ["周杰伦 晴天", "hebe 小幸运", "适合跑步的歌", "夜に駆ける yoasobi", "越过山丘才发现无人等候", "jay chou live 2019"]
    for q in qs:
        emb.encode_query(q)
    lat = []
    for i in range(n):
        t = time.perf_counter()
        emb.encode_query(qs[i % len(qs)])
        lat.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "max_ms": round(float(np.max(lat)), 3), "n": n, "loadavg_1m": round(os.getloadavg()[0], 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--two-tower", help="two-tower model directory (query latency)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=14, help="mean pretraining sequence is 11.8 pieces + [CLS]/[SEP]")
    ap.add_argument("--default-steps", type=int, default=2000)
    ap.add_argument("--out", default="benchmarks/results/expansion.json")
    args = ap.parse_args()
    res: dict = {"pretrain": [bench_pretrain_step(t, args.steps, args.batch, args.seq_len, args.default_steps) for t in args.threads]}
    if args.two_tower:
        res["query_vector"] = bench_query_vector(args.two_tower)
    print(f"{'pretrain threads':<18}{'s/step':>8}{'steps':>7}{'minutes':>9}{'load':>7}")
    for r in res["pretrain"]:
        print(f"{r['threads']:<18}{r['s_per_step_median']:>8}{r['default_steps']:>7}{r['extrapolated_minutes']:>9}{r['loadavg_1m']:>7}")
    if "query_vector" in res:
        q = res["query_vector"]
        print(f"two-tower query vector (1 core): p50 {q['p50_ms']} ms, p99 {q['p99_ms']} ms, max {q['max_ms']} ms")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1), encoding="utf-8")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
