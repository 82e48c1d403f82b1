"""One plan builder per dataset command: typed options in, a `Plan` out, run by an `Executor`.

The CLI, the Python API (`mmtok.filter(...)`) and recipes (`mmtok run`) all come here, so the
three give the same result documents. Importing this package is cheap: each command's module
is imported when it is used."""

from __future__ import annotations

import importlib
from typing import Any

# command -> (module, options class), in the order a recipe's steps usually run
COMMANDS = {
    "probe": ("mmtok.commands.probe", "ProbeOptions"),
    "filter": ("mmtok.commands.filter", "FilterOptions"),
    "dedup": ("mmtok.commands.dedup", "DedupOptions"),
    "tile": ("mmtok.commands.tile", "TileOptions"),
    "estimate-budget": ("mmtok.commands.budget", "BudgetOptions"),
    "embed": ("mmtok.commands.embed", "EmbedOptions"),
    "sample-frames": ("mmtok.commands.sample_frames", "SampleFramesOptions"),
    "tokenize-images": ("mmtok.commands.tokenize_images", "TokenizeImagesOptions"),
    "detokenize": ("mmtok.commands.detokenize", "DetokenizeOptions"),
}


def module(command: str) -> Any:
    return importlib.import_module(COMMANDS[command][0])


def options_class(command: str) -> Any:
    name, cls = COMMANDS[command]
    return getattr(importlib.import_module(name), cls)


def command_of(opts: Any) -> str:
    """The command whose options `opts` are."""
    for command, (_, cls) in COMMANDS.items():
        if type(opts).__name__ == cls and type(opts).__module__ == COMMANDS[command][0]:
            return command
    for command in COMMANDS:  # a subclass (the CLI's)
        if isinstance(opts, options_class(command)):
            return command
    raise KeyError(type(opts).__name__)


def build_plan(opts: Any) -> Any:
    """The plan of one command: its options checked, its passes and global steps."""
    from .options import check, check_engine
    from .plan import one_pass_plan

    check(opts)
    check_engine(opts)
    command = module(command_of(opts))
    if hasattr(command, "plan"):  # a command with global steps (dedup)
        return command.plan(opts)
    return one_pass_plan(opts, command.part(opts))
