"""Search-log simulator: a seeded population searches the catalog through our own pipeline;
clicks, plays and other outcomes follow a position-based click model driven by hidden
relevance grades (the judge, `truth.py`), taste, quality and trends. The models learn from
the logs only; the truth folder is for evaluation.

    mvsearch simulate --catalog var/demo/docs.jsonl --out var/sim [--days 90 --users 1000 --seed 7]

Output directory:
    logs/impressions.jsonl         one shown result a line (SPEC schema + valid_play, session_id, split, features snapshot)
    logs/sessions.jsonl            the queries of each session in order (reformulations for rewrite mining)
    aggregates/video_daily.jsonl   T+1 daily impressions/clicks/valid plays per video
    aggregates/query_video_daily.jsonl   the same per (normalized query, video)
    judged/queries.jsonl, judged/qrels.jsonl, judged/relevance_pairs.jsonl
    truth/                         hidden: grades, intents, users' tastes (never for training or serving)
    summary.json
"""
from .runner import SimSummary, load_sim_config, simulate
from .truth import Judge, QueryIntent

__all__ = ["simulate", "load_sim_config", "SimSummary", "Judge", "QueryIntent"]
