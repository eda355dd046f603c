"""Ranking models, one per file; shared layers in `layers.py`; one trainer (`ranking.trainer`)."""
from __future__ import annotations

from typing import Any

from .deepfm import DeepFM
from .esmm import ESMM
from .layers import InputSchema, RankingModel
from .mmoe import MMoE
from .ple import PLE
from .shared_bottom import SharedBottom
from .single_task import SingleTask

MODELS: dict[str, type[RankingModel]] = {m.name: m for m in (DeepFM, SingleTask, SharedBottom, ESMM, MMoE, PLE)}


def build_model(name: str, schema: InputSchema, **params: Any) -> RankingModel:
    if name not in MODELS:
        raise ValueError(f"unknown ranking model {name!r}; available: {sorted(MODELS)}")
    return MODELS[name](schema, **params)


__all__ = ["MODELS", "build_model", "InputSchema", "RankingModel", "DeepFM", "SingleTask", "SharedBottom", "ESMM", "MMoE", "PLE"]
