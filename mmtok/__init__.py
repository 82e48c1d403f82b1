"""mmtok: multimodal data preparation and vision-token budgets.

The commands are also Python functions (`mmtok.filter`, `mmtok.dedup`, `mmtok.tile`,
`mmtok.estimate_budget`, `mmtok.embed`, `mmtok.probe`, `mmtok.sample_frames`,
`mmtok.tokenize_images`, `mmtok.detokenize`, `mmtok.layout`, `mmtok.run_recipe`), loaded on
first use so that `import mmtok` stays cheap (see `mmtok.api`)."""

# No imports here: `mmtok` starts with nothing loaded (a Ctrl-C while Python starts the CLI
# must land in mmtok.cli.entry's handler, and `import mmtok` stays instant).

__version__ = "0.1.0"

_API = {
    "probe",
    "filter",
    "dedup",
    "tile",
    "estimate_budget",
    "embed",
    "sample_frames",
    "tokenize_images",
    "detokenize",
    "layout",
    "run_recipe",
    "MmtokWarning",
}


def __getattr__(name: str) -> object:
    """The API functions, imported on first use (PEP 562)."""
    if name in _API:
        from mmtok import api

        return getattr(api, name)
    if name == "MmtokError":
        from mmtok.errors import MmtokError

        return MmtokError
    if name == "OptionError":  # a MmtokError: an option a command does not take, a bad value
        from mmtok.commands.options import OptionError

        return OptionError
    raise AttributeError(f"module 'mmtok' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, "MmtokError", "OptionError"])
