"""Layouts per second for every preset (pure Python, one core), next to transformers' own size
helpers on the same sizes where they exist (ratio > 1: mmtok is faster).

  python benchmarks/layout.py [--sizes 20000]
"""

from __future__ import annotations

import argparse
import random
import time

from mmtok.presets import get_preset, list_presets


def rate(fn, sizes) -> float:
    t0 = time.perf_counter()
    for w, h in sizes:
        fn(w, h)
    return len(sizes) / (time.perf_counter() - t0)


def references() -> dict:
    """transformers' helpers for the same arithmetic (what a user would call today)."""
    try:
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
            GotOcr2ImageProcessorPil,
        )
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            Idefics3ImageProcessorPil,
        )
        from transformers.models.mllama import image_processing_pil_mllama as mllama
        from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as qwen2
    except ImportError:
        return {}

    def mllama_ref(w, h):
        ch, cw = mllama.get_optimal_tiled_canvas(h, w, 4, 560)
        return mllama.get_image_size_fit_to_canvas(h, w, ch, cw, 560)

    def qwen_ref(w, h):
        try:
            return qwen2.smart_resize(h, w, factor=28, min_pixels=3136, max_pixels=12845056)
        except ValueError:
            return None

    idefics = Idefics3ImageProcessorPil(
        size={"longest_edge": 1456}, max_image_size={"longest_edge": 364}
    )
    internvl = GotOcr2ImageProcessorPil(
        size={"height": 448, "width": 448}, min_patches=1, max_patches=12, crop_to_patches=True
    )
    return {
        "mllama": mllama_ref,
        "qwen2-vl": qwen_ref,
        "idefics3": lambda w, h: idefics.get_number_of_image_patches(h, w),
        "internvl": lambda w, h: internvl.get_number_of_image_patches(h, w),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, default=20_000)
    args = parser.parse_args()
    rng = random.Random(0)
    sizes = [(rng.randint(1, 6000), rng.randint(1, 6000)) for _ in range(args.sizes)]
    refs = references()
    print(f"{args.sizes:,} random sizes up to 6000 px, one core")
    print(f"{'preset':<18}{'layouts/s':>12}{'transformers/s':>16}{'ratio':>8}")
    for preset in list_presets():
        mine = rate(get_preset(preset.name).layout, sizes)
        ref = refs.get(preset.name)
        ref_rate = rate(ref, sizes[: max(len(sizes) // 10, 1)]) if ref else None
        tail = f"{ref_rate:>16,.0f}{mine / ref_rate:>8.1f}" if ref_rate else f"{'-':>16}{'-':>8}"
        print(f"{preset.name:<18}{mine:>12,.0f}{tail}")


if __name__ == "__main__":
    main()
