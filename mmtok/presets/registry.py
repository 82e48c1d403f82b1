"""Presets as data: a family (one pure rule) plus the published parameters of one model.

`get_preset("qwen2-vl:max_pixels=1003520")` returns a preset with overrides applied; users add
their own from a TOML file (`load_preset_file`), each table naming the preset it builds on:

    [my-448]
    base = "mllama"
    tile_size = 448
    tokens_per_tile = 1025
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmtok.errors import MmtokError
from mmtok.presets import (
    anyres,
    fit_to_canvas,
    fixed,
    formulas,
    idefics3,
    internvl,
    pixtral,
    smart_resize,
)
from mmtok.presets.layout import Rule
from mmtok.presets.pixels import RESAMPLE, pixel_settings

# A family builds a preset's pure `layout(width, height)` from the published parameters.
FAMILIES: dict[str, Callable[..., Rule]] = {
    "fit_to_canvas": fit_to_canvas.fit_to_canvas,
    "smart_resize": smart_resize.dynamic_resolution,
    "anyres": anyres.anyres,
    "idefics3": idefics3.split_image,
    "internvl": internvl.dynamic_tiles,
    "pixtral": pixtral.patch_grid,
    "fixed": fixed.fixed_square,
    "letterbox": fixed.letterbox,
    "gemma3": fixed.gemma3,
    "openai_tiles": formulas.openai_tiles,
    "moonvit": formulas.moonvit,
}


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    params: dict[str, Any]
    source: str
    aliases: tuple[str, ...] = field(default=())
    pixels: dict[str, Any] = field(default_factory=dict)  # resample filter, pad value (pixels.py)
    # `layout(width, height)`: the image's Layout, or Refused where the model refuses the size.
    # Built once from the family and the parameters, so a layout is a single call.
    layout: Rule = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "layout", FAMILIES[self.family](**self.params))

    def __reduce__(self):
        # The rule is a closure: a worker rebuilds it from the preset's data.
        args = (self.name, self.family, self.params, self.source, self.aliases, self.pixels)
        return Preset, args

    def pixel_settings(self) -> dict[str, Any]:
        """How `--emit tiles` renders pixels: the family's reference settings, then the preset's."""
        return pixel_settings(self.family, self.pixels)

    def spec(self) -> str:
        """The name with every parameter, as `--preset` accepts it."""
        items = {**self.params, **self.pixels}
        return self.name + ":" + ",".join(f"{k}={_format(v)}" for k, v in items.items())

    def with_overrides(self, overrides: dict[str, str], name: str | None = None) -> Preset:
        params, pixels = dict(self.params), dict(self.pixels)
        pixel_defaults = self.pixel_settings()
        for key, text in overrides.items():
            if key in params:
                params[key] = _parse_like(params[key], text, key)
            elif key in pixel_defaults:
                pixels[key] = _parse_pixel(key, _parse_like(pixel_defaults[key], text, key))
            else:
                raise MmtokError(
                    f"preset {self.name!r} has no parameter {key!r}",
                    hint="parameters: " + ", ".join([*params, *pixel_defaults]),
                )
        return Preset(name or self.name, self.family, params, self.source, pixels=pixels)


def _parse_pixel(key: str, value: Any) -> Any:
    if key == "resample" and value not in RESAMPLE:
        raise MmtokError(f"resample={value!r}: expected one of " + ", ".join(RESAMPLE))
    if key == "pad_value" and not 0 <= value <= 255:
        raise MmtokError(f"pad_value={value}: expected 0..255")
    return value


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ";".join("x".join(str(v) for v in pair) for pair in value)
    return str(value)


def _parse_like(default: Any, text: Any, key: str) -> Any:
    """Parse an override to the type of the parameter's published value."""
    if not isinstance(text, str):
        if isinstance(default, tuple) and isinstance(text, list):
            return tuple(tuple(int(v) for v in pair) for pair in text)
        if isinstance(default, bool) != isinstance(text, bool):
            raise MmtokError(f"{key}: expected {type(default).__name__}, got {text!r}")
        return type(default)(text)
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(float(text)) if "e" in text.lower() else int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):  # pinpoints: "336x672;672x336"
            return tuple(tuple(int(v) for v in pair.split("x")) for pair in text.split(";"))
    except ValueError:
        raise MmtokError(f"{key}={text!r}: expected {type(default).__name__}") from None
    return text


def _preset(name, family, source, aliases=(), pixels=None, **params) -> Preset:
    return Preset(name, family, params, source, tuple(aliases), pixels or {})


def _sibling(base: Preset, name: str, source: str, aliases=(), **changes) -> Preset:
    """A preset that differs from `base` only in the parameters given."""
    return Preset(
        name, base.family, {**base.params, **changes}, source, tuple(aliases), base.pixels
    )


TF = "transformers v5.23"
# fmt: off
MLLAMA = _preset("mllama", "fit_to_canvas", f"{TF} mllama/image_processing_pil_mllama.py; Llama-3.2-11B-Vision-Instruct",
                 tile_size=560, max_tiles=4, tokens_per_tile=1601, global_tile=False, cross_attention=True,
                 pad_to_max_tiles=True)
QWEN2_VL = _preset("qwen2-vl", "smart_resize", f"{TF} qwen2_vl/image_processing_pil_qwen2_vl.py; Qwen2/2.5-VL hub config",
                   aliases=("qwen2.5-vl",), patch_size=14, merge_size=2, min_pixels=3136, max_pixels=12845056,
                   temporal_patch_size=2, prompt_extra=2, row_end_tokens=False)
LLAVA_NEXT = _preset("llava-next", "anyres", f"{TF} llava_next/processing_llava_next.py; llava-v1.6-mistral-7b-hf",
                     tile_size=336, patch_size=14, base_tokens=576, max_tiles_shrink=0,
                     pinpoints=((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)))  # (height, width)
IDEFICS3 = _preset("idefics3", "idefics3", f"{TF} idefics3/image_processing_pil_idefics3.py; Idefics3-8B-Llama3",
                   longest_edge=1456, max_image_size=364, image_seq_len=169, do_image_splitting=True)
PIXTRAL = _preset("pixtral", "pixtral", "mistral-common 1.13.1 tokens/tokenizers/image.py; Pixtral-12B",
                  patch_size=16, merge_size=1, longest_edge=1024)

BUILTIN: tuple[Preset, ...] = (
    _sibling(MLLAMA, "llama3-336", "Llama 3 paper (arXiv 2407.21783): <= 4 tiles of 336 px; 577 = 24^2 + CLS (derived)",
             tile_size=336, tokens_per_tile=577),
    MLLAMA,
    _sibling(MLLAMA, "llama4", f"{TF} llama4/image_processing_llama4.py, processing_llama4.py",
             tile_size=336, max_tiles=16, tokens_per_tile=144, global_tile=True, cross_attention=False,
             pad_to_max_tiles=False),
    QWEN2_VL,
    _sibling(QWEN2_VL, "qwen3-vl", f"{TF} qwen2_vl smart_resize with the Qwen3-VL config (patch 16)",
             patch_size=16, min_pixels=65536, max_pixels=16777216),
    _preset("llava-1.5", "fixed", f"{TF} llava/image_processing_pil_llava.py; 336 shortest edge + centre crop",
            size=336, tokens=576, prompt_extra=0),
    LLAVA_NEXT,
    _sibling(LLAVA_NEXT, "llava-onevision", f"{TF} llava_onevision/processing_llava_onevision.py (anyres_max_9)",
             tile_size=384, base_tokens=729, max_tiles_shrink=9,
             pinpoints=tuple((384 * a, 384 * b) for a in range(1, 7) for b in range(1, 7))),
    IDEFICS3,
    _sibling(IDEFICS3, "smolvlm", f"{TF} smolvlm/image_processing_pil_smolvlm.py; SmolVLM-Instruct",
             longest_edge=1536, max_image_size=384, image_seq_len=81),
    _sibling(IDEFICS3, "smolvlm2", f"{TF} smolvlm/; SmolVLM2-256M/500M",
             longest_edge=2048, max_image_size=512, image_seq_len=64),
    _preset("internvl", "internvl", f"{TF} got_ocr2/image_processing_pil_got_ocr2.py, internvl/processing_internvl.py",
            tile_size=448, min_tiles=1, max_tiles=12, tokens_per_tile=256, use_thumbnail=True),
    PIXTRAL,
    _sibling(PIXTRAL, "mistral3", "mistral-common 1.13.1 tokens/tokenizers/image.py; Mistral-Small-3.1",
             patch_size=14, merge_size=2, longest_edge=1540),
    _preset("gemma3", "gemma3", f"{TF} gemma3/image_processing_pil_gemma3.py, processing_gemma3.py",
            size=896, tokens_per_image=256, pan_and_scan=False, min_crop_size=256, max_num_crops=4,
            min_ratio_to_activate=1.2),
    _preset("chameleon", "fixed", f"{TF} chameleon/ (shortest edge 512, centre crop, 1024 VQ ids + 2 markers)",
            size=512, tokens=1024, prompt_extra=2, pixels={"resample": "lanczos"}),
    _sibling(QWEN2_VL, "emu3", f"{TF} emu3/image_processing_emu3.py (smart_resize, factor 8)", aliases=(),
             patch_size=8, merge_size=1, min_pixels=262144, max_pixels=1048576, temporal_patch_size=1,
             prompt_extra=5, row_end_tokens=True),
    _preset("janus", "letterbox", f"{TF} janus/image_processing_pil_janus.py, processing_janus.py",
            size=384, min_size=14, tokens=576, prompt_extra=2),
    _preset("gpt-4o", "openai_tiles", "OpenAI vision guide, 'Calculating costs' (detail: high)",
            fit_size=2048, short_side=768, tile_size=512, base_tokens=85, tile_tokens=170),
    _preset("kimi-vl", "moonvit", "moonshotai/Kimi-VL-A3B-Instruct image_processing_kimi_vl.py (via vLLM kimi_vl.py)",
            patch_size=14, merge_size=2, in_token_limit=4096, max_patches_per_side=512),
)
# fmt: on

_registry: dict[str, Preset] = {}


def register(preset: Preset, *, replace: bool = False) -> None:
    for name in (preset.name, *preset.aliases):
        if name in _registry and not replace:
            raise MmtokError(f"preset {name!r} is already defined")
        _registry[name] = preset


for _p in BUILTIN:
    register(_p)


def list_presets() -> list[Preset]:
    """Every preset once (aliases point at the same one), in registration order."""
    seen, out = set(), []
    for preset in _registry.values():
        if preset.name not in seen:
            seen.add(preset.name)
            out.append(preset)
    return out


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """`name:key=value,key=value` (`:` also separates overrides) -> (name, overrides)."""
    name, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, rest.replace(":", ",").split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise MmtokError(
                f"bad preset override {item!r} in {spec!r}", hint="write name:key=value,key=value"
            )
        overrides[key.strip()] = value.strip()
    return name.strip(), overrides


@functools.lru_cache(maxsize=256)
def get_preset(spec: str) -> Preset:
    """A preset by name, with optional overrides: `get_preset("gemma3:pan_and_scan=true")`."""
    name, overrides = parse_spec(spec)
    if name not in _registry:
        raise MmtokError(
            f"unknown preset {name!r}", hint="presets: " + ", ".join(sorted(_registry))
        )
    preset = _registry[name]
    return preset.with_overrides(overrides) if overrides else preset


def load_preset_file(path: str) -> list[Preset]:
    """Register the presets of a TOML file; each table names its `base` preset."""
    import tomllib  # here: every worker imports the registry, few runs read a preset file

    try:
        with open(path, "rb") as f:
            tables = tomllib.load(f)
    except OSError as e:
        raise MmtokError(f"cannot read preset file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise MmtokError(f"preset file {path} is not valid TOML: {e}") from None
    added = []
    for name, table in tables.items():
        if not isinstance(table, dict) or "base" not in table:
            raise MmtokError(f'{path}: [{name}] needs base = "<preset>"')
        base = get_preset(str(table["base"]))
        params = {k: v for k, v in table.items() if k not in ("base", "source")}
        preset = base.with_overrides(params, name=name)
        preset = Preset(
            name,
            preset.family,
            preset.params,
            table.get("source", f"{path}: based on {base.name}"),
            pixels=preset.pixels,
        )
        register(preset, replace=True)
        added.append(preset)
    get_preset.cache_clear()
    return added
