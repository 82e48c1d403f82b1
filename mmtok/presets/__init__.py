"""Model presets: what each model's image processor does with an image of a given size.

from mmtok.presets import get_preset
get_preset("mllama").layout(1920, 1080)   # Layout(resized=(1120, 630), num_tiles=4, ...)
"""

from mmtok.presets.layout import Layout, Refused
from mmtok.presets.registry import (
    FAMILIES,
    Preset,
    get_preset,
    list_presets,
    load_preset_file,
    parse_spec,
)

__all__ = [
    "FAMILIES",
    "Layout",
    "Preset",
    "Refused",
    "get_preset",
    "list_presets",
    "load_preset_file",
    "parse_spec",
]
