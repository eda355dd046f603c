"""Rerank stage. Baseline: identity (keeps the ranker's order and says so in `explain`).
DPP diversity, rule scattering and operator interventions replace it through the same
interface."""
from __future__ import annotations

from typing import Any

from search.contracts import StageInput, StageOutput


class IdentityRerank:
    name = "identity"

    def __init__(self, config: dict[str, Any] | None = None):
        self.config = config or {}

    def run(self, inp: StageInput) -> StageOutput:
        for pos, c in enumerate(inp.candidates):
            c.explain["rerank"] = {"stage": self.name, "position_change": 0}
        return StageOutput(inp.candidates, {"stage": self.name})
