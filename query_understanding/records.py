"""Reading JSONL logs and catalogs in offline jobs, where a broken line must not stop the job."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; lines that are not a JSON object are passed over (the
    ingest path, which must report them, uses search.catalog instead)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict):
                yield r
