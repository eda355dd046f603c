"""Commands of this stage, added to `mvsearch` by search/cli.py (STAGE_COMMANDS)."""
from __future__ import annotations

import argparse
from typing import Callable


def add_commands(sub: argparse._SubParsersAction, eval_sub: argparse._SubParsersAction,
                 engine_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """`sub`: top-level subcommands; `eval_sub`: `mvsearch eval …`; `engine_args(p)` adds the
    shared engine/index options to a parser."""
    from .commands import add_relevance_commands

    # `mvsearch eval relevance`, `mvsearch relevance click-graph …|train-ensemble`; rsub = the
    # `mvsearch relevance …` subparsers, where further relevance commands (aspect model) go.
    rsub = add_relevance_commands(sub, eval_sub, engine_args)
    from .aspect_train import add_aspect_commands
    from .qbqtc import add_qbqtc_commands

    add_aspect_commands(rsub, engine_args)    # train-aspect, finetune-aspect, encode-aspect (part B)
    add_qbqtc_commands(eval_sub)              # mvsearch eval qbqtc (part B)
