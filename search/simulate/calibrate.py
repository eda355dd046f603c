"""Calibrate the simulator's intent mix on real queries.

Reads the music-labelled queries of the VSQ video-search query set (label 20 = 音乐) in
`../shared/data/queries/vsq/`, tags each with the business dictionary (artist / song / show
names) and version/mood words, and reports the share of each intent type — the shape our
simulated queries should have. Used to set `[intents]` in default_sim.toml:

    python -m search.simulate.calibrate --data ../shared/data
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from query_understanding.normalize import normalize
from query_understanding.tokenize import Tokenizer
from search.kb import business_dictionary, load_kb, write_dictionary

from .queries import MOOD_WORDS, VERSION_WORDS

MUSIC_LABEL = "20"
EXTRA_VERSION = {"演唱会", "现场版", "教程", "伴奏", "dj", "舞蹈", "广场舞", "串烧", "钢琴曲", "吉他", "翻唱", "mv", "live", "合唱", "教学", "原版"}


def classify(tokens: list[str], types: dict[str, str]) -> str:
    kinds = {types.get(t) for t in tokens}
    words = set(tokens)
    has_version = bool(words & (set(VERSION_WORDS) | EXTRA_VERSION)) or any(v in "".join(tokens) for v in ("教学", "演唱会", "翻唱", "舞蹈"))
    moods = {w for ws in MOOD_WORDS.values() for w in ws} | {"歌曲", "好听", "流行", "经典", "伤感"}
    if "show" in kinds:
        return "show"
    if "artist" in kinds and "song" in kinds:
        return "version" if has_version else "artist_song"
    if "song" in kinds:
        return "version" if has_version else "song"
    if "artist" in kinds:
        return "version" if has_version else "artist"
    if has_version:
        return "version"
    if words & moods:
        return "mood"
    return "other"


def calibrate(data_dir: str | Path) -> dict[str, float]:
    vsq = Path(data_dir) / "queries" / "vsq" / "train.txt"
    kb = load_kb()
    tmp = Path("/tmp") / "mvsearch_calibrate_dict.txt"
    write_dictionary(business_dictionary(kb), tmp)
    tok = Tokenizer(tmp)
    types = {e.word: e.tag for e in tok.entries}
    counts: Counter[str] = Counter()
    lengths: Counter[int] = Counter()
    for line in vsq.read_text(encoding="utf-8").splitlines():
        label, _, q = line.partition("\t")
        if label != MUSIC_LABEL or not q.strip():
            continue
        toks = tok.tokenize(normalize(q))
        counts[classify(toks, types)] += 1
        lengths[min(len(toks), 6)] += 1
    total = sum(counts.values())
    return {"queries": total, "intent_share": {k: round(v / total, 3) for k, v in counts.most_common()},
            "tokens_per_query": {k: round(v / total, 3) for k, v in sorted(lengths.items())}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args(argv)
    print(json.dumps(calibrate(args.data), ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
