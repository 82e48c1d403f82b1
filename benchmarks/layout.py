"""Layouts per second for every preset (pure Python, one core), next to the reference helper
that does the same arithmetic (transformers' own code, built from the published config), on
the same sizes in the same run. ratio > 1: mmtok is faster. Blocks of 500 sizes are timed for
mmtok and the reference back to back, `--rounds` times, keeping each block's fastest round, so
a busy machine slows both alike.

  python benchmarks/layout.py [--sizes 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from types import SimpleNamespace

from mmtok.presets import get_preset, list_presets

Fn = Callable[[int, int], object]


def seconds(fn: Fn, sizes: list[tuple[int, int]]) -> float:
    t0 = time.perf_counter()
    for w, h in sizes:
        fn(w, h)
    return time.perf_counter() - t0


def rates(mine: Fn, ref: Fn | None, sizes: list, rounds: int) -> tuple[float, float | None]:
    """Layouts/s of both on the same sizes. The sizes go in blocks of 500, each block timed
    for mmtok then the reference, back to back; a block counts its fastest round. On a busy
    machine both sides of a block see the same load, so the ratio holds where rates drift."""
    blocks = [sizes[i : i + 500] for i in range(0, len(sizes), 500)]
    best_mine, best_ref = [float("inf")] * len(blocks), [float("inf")] * len(blocks)
    for _ in range(rounds):
        for i, block in enumerate(blocks):
            best_mine[i] = min(best_mine[i], seconds(mine, block))
            if ref:
                best_ref[i] = min(best_ref[i], seconds(ref, block))
    return len(sizes) / sum(best_mine), len(sizes) / sum(best_ref) if ref else None


def references() -> dict[str, Fn]:
    """transformers' helpers for each preset's arithmetic (what a user would call today)."""
    try:
        from transformers.image_processing_utils import select_best_resolution
        from transformers.models.emu3 import image_processing_emu3 as emu3
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
            GotOcr2ImageProcessorPil,
        )
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            Idefics3ImageProcessorPil,
        )
        from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor
        from transformers.models.llava_onevision.processing_llava_onevision import (
            LlavaOnevisionProcessor,
        )
        from transformers.models.mllama import image_processing_pil_mllama as mllama
        from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as qwen2
    except ImportError:
        return {}
    refs: dict[str, Fn] = {}

    def canvas_ref(tile: int, max_tiles: int) -> Fn:
        def fn(w, h):
            ch, cw = mllama.get_optimal_tiled_canvas(h, w, max_tiles, tile)
            return mllama.get_image_size_fit_to_canvas(h, w, ch, cw, tile)

        return fn

    def smart_ref(module, factor: int, min_pixels: int, max_pixels: int) -> Fn:
        def fn(w, h):
            try:
                return module.smart_resize(
                    h, w, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels
                )
            except ValueError:
                return None

        return fn

    def anyres_ref(cls, preset: str, **attrs) -> Fn:
        # The processor's own token rule; `self` holds only the attributes it reads
        # (as tests/presets/test_oracle.py does), so no tokenizer or hub download.
        pins = [list(p) for p in get_preset(preset).params["pinpoints"]]
        tile = get_preset(preset).params["tile_size"]
        fake = SimpleNamespace(image_processor=SimpleNamespace(image_grid_pinpoints=pins), **attrs)
        fake._get_unpadded_features = lambda *a: cls._get_unpadded_features(fake, *a)

        def fn(w, h):
            select_best_resolution((h, w), pins)  # the canvas, which mmtok reports too
            return cls._get_number_of_features(fake, h, w, tile, tile)

        return fn

    for name in ("mllama", "llama3-336", "llama4"):
        p = get_preset(name).params
        refs[name] = canvas_ref(p["tile_size"], p["max_tiles"])
    for name in ("qwen2-vl", "qwen3-vl", "emu3"):
        p = get_preset(name).params
        module = emu3 if name == "emu3" else qwen2
        refs[name] = smart_ref(
            module, p["patch_size"] * p["merge_size"], p["min_pixels"], p["max_pixels"]
        )
    refs["llava-next"] = anyres_ref(
        LlavaNextProcessor, "llava-next", patch_size=14, num_additional_image_tokens=1
    )
    refs["llava-onevision"] = anyres_ref(
        LlavaOnevisionProcessor,
        "llava-onevision",
        num_image_tokens=729,
        vision_aspect_ratio="anyres_max_9",
    )
    for name in ("idefics3", "smolvlm", "smolvlm2"):
        p = get_preset(name).params
        processor = Idefics3ImageProcessorPil(
            size={"longest_edge": p["longest_edge"]},
            max_image_size={"longest_edge": p["max_image_size"]},
        )
        refs[name] = lambda w, h, proc=processor: proc.get_number_of_image_patches(h, w)
    internvl = GotOcr2ImageProcessorPil(
        size={"height": 448, "width": 448}, min_patches=1, max_patches=12, crop_to_patches=True
    )
    refs["internvl"] = lambda w, h: internvl.get_number_of_image_patches(h, w)
    return refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    sizes = [(rng.randint(1, 6000), rng.randint(1, 6000)) for _ in range(args.sizes)]
    refs = references()
    print(f"{args.sizes:,} random sizes up to 6000 px, one core, best of {args.rounds} rounds")
    print(f"{'preset':<18}{'layouts/s':>12}{'reference/s':>14}{'ratio':>8}")
    for preset in list_presets():
        mine, ref = rates(get_preset(preset.name).layout, refs.get(preset.name), sizes, args.rounds)
        tail = f"{ref:>14,.0f}{mine / ref:>8.2f}" if ref else f"{'-':>14}{'-':>8}"
        print(f"{preset.name:<18}{mine:>12,.0f}{tail}", flush=True)


if __name__ == "__main__":
    main()
