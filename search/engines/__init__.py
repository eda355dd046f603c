"""Search engines behind recall: embedded (tantivy + faiss) and Elasticsearch 8.x, both
built from `index_config/` and queried through the engine-neutral `TextQueryPlan`."""
from .base import Engine, EngineHit, EngineUnavailable, TextQueryPlan, make_plan

__all__ = ["Engine", "EngineHit", "EngineUnavailable", "TextQueryPlan", "make_plan"]
