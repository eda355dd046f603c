"""Ranking and rerank. Public entry points: `FormulaRanker` (baseline ranker) and
`IdentityRerank` (baseline rerank), each `run(StageInput) -> StageOutput`. The learned
rankers (DeepFM … MMoE) and DPP rerank plug in with the same interface."""
from .formula import FormulaRanker, FormulaWeights, smoothed_rate
from .rerank import IdentityRerank

__all__ = ["FormulaRanker", "FormulaWeights", "smoothed_rate", "IdentityRerank"]
