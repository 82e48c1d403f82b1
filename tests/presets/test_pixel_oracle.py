"""Oracle: the pixels of `render_tiles` against transformers' own processors, before rescaling.

Each processor is built with its published config and run with `do_rescale=False,
do_normalize=False` on a channels-last uint8 array (explicit `input_data_format`, so the 1- and
3-pixel channel-inference pitfall of the design note cannot strike). The issue's bar: within
±1 level on at least 99.9% of the pixels. Skips cleanly without transformers (the dev extra
installs it, so CI runs it).
"""

from __future__ import annotations

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from transformers.image_utils import ChannelDimension, PILImageResampling  # noqa: E402

from mmtok.presets import get_preset  # noqa: E402
from mmtok.presets.pixels import render_tiles  # noqa: E402
from tests.conftest import photo  # noqa: E402

LAST = ChannelDimension.LAST


def _chw_list(values) -> list[np.ndarray]:
    """Processor output (any nesting of (C, H, W) arrays) as a list of HWC uint8 arrays."""
    arrays = []

    def walk(v):
        v = np.asarray(v) if not isinstance(v, list) else v
        if isinstance(v, list):
            for item in v:
                walk(item)
        elif v.ndim == 3:
            arrays.append(np.clip(np.rint(v), 0, 255).astype(np.uint8).transpose(1, 2, 0))
        else:
            for item in v:
                walk(item)

    walk(values)
    return arrays


def _mllama(tile):
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    proc = MllamaImageProcessorPil(
        size={"height": tile, "width": tile},
        max_image_tiles=4,
        resample=PILImageResampling.BILINEAR,
    )

    def run(array):
        out = proc(array, input_data_format=LAST, do_rescale=False, do_normalize=False)
        n = int(np.asarray(out["num_tiles"]).ravel()[0])
        return _chw_list(np.asarray(out["pixel_values"])[0, 0, :n])

    return run


def _llama4(array):
    import torch
    from transformers.models.llama4.image_processing_llama4 import Llama4ImageProcessor

    proc = Llama4ImageProcessor(size={"height": 336, "width": 336}, max_patches=16)
    out = proc(
        torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(),
        do_rescale=False,
        do_normalize=False,
        return_tensors="pt",
    )
    return _chw_list(out["pixel_values"].float().numpy())


def _qwen(patch, min_pixels, max_pixels):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    proc = Qwen2VLImageProcessorPil(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
    )

    def run(array):
        out = proc(array, input_data_format=LAST, do_rescale=False, do_normalize=False)
        _, gh, gw = (int(v) for v in np.asarray(out["image_grid_thw"])[0])
        # invert patchify: (gh/2, gw/2, 2, 2, C, T, p, p) -> (C, gh*p, gw*p)
        x = np.asarray(out["pixel_values"]).reshape(gh // 2, gw // 2, 2, 2, 3, 2, patch, patch)
        x = x[:, :, :, :, :, 0].transpose(4, 0, 2, 5, 1, 3, 6).reshape(3, gh * patch, gw * patch)
        return _chw_list([x])

    return run


def _emu3(array):
    from transformers.models.emu3.image_processing_emu3 import Emu3ImageProcessor

    proc = Emu3ImageProcessor(min_pixels=512 * 512, max_pixels=1024 * 1024, spatial_factor=8)
    out = proc(array, input_data_format=LAST, do_rescale=False, do_normalize=False)
    h, w = (int(v) for v in np.asarray(out["image_sizes"])[0])
    return [a[:h, :w] for a in _chw_list(out["pixel_values"])]


def _simple(cls_path, **config):
    module, cls = cls_path.rsplit(".", 1)

    def run(array):
        proc = getattr(__import__(module, fromlist=[cls]), cls)(**config)
        out = proc(array, input_data_format=LAST, do_rescale=False, do_normalize=False)
        return _chw_list(out["pixel_values"])

    return run


TM = "transformers.models."
LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
REFERENCES = {
    "mllama": _mllama(560),
    "llama3-336": _mllama(336),
    "llama4": _llama4,
    "qwen2-vl": _qwen(14, 3136, 12845056),
    "qwen3-vl": _qwen(16, 65536, 16777216),
    "emu3": _emu3,
    "llava-1.5": _simple(
        TM + "llava.image_processing_pil_llava.LlavaImageProcessorPil",
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
    ),
    "llava-next": _simple(
        TM + "llava_next.image_processing_pil_llava_next.LlavaNextImageProcessorPil",
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        image_grid_pinpoints=LLAVA_NEXT_PINPOINTS,
        do_pad=False,
    ),
    "llava-onevision": _simple(
        TM + "llava_onevision.image_processing_pil_llava_onevision.LlavaOnevisionImageProcessorPil",
        size={"height": 384, "width": 384},
        image_grid_pinpoints=[[384 * a, 384 * b] for a in range(1, 7) for b in range(1, 7)],
        do_pad=False,
    ),
    "idefics3": _simple(
        TM + "idefics3.image_processing_pil_idefics3.Idefics3ImageProcessorPil",
        size={"longest_edge": 1456},
        max_image_size={"longest_edge": 364},
        do_pad=False,
    ),
    "smolvlm": _simple(
        TM + "smolvlm.image_processing_pil_smolvlm.SmolVLMImageProcessorPil",
        size={"longest_edge": 1536},
        max_image_size={"longest_edge": 384},
        do_pad=False,
    ),
    "internvl": _simple(
        TM + "got_ocr2.image_processing_pil_got_ocr2.GotOcr2ImageProcessorPil",
        size={"height": 448, "width": 448},
        crop_to_patches=True,
        min_patches=1,
        max_patches=12,
    ),
    "pixtral": _simple(
        TM + "pixtral.image_processing_pil_pixtral.PixtralImageProcessorPil",
        size={"longest_edge": 1024},
        patch_size={"height": 16, "width": 16},
    ),
    "gemma3": _simple(
        TM + "gemma3.image_processing_pil_gemma3.Gemma3ImageProcessorPil",
        size={"height": 896, "width": 896},
    ),
    "gemma3:pan_and_scan=true": _simple(
        TM + "gemma3.image_processing_pil_gemma3.Gemma3ImageProcessorPil",
        size={"height": 896, "width": 896},
        do_pan_and_scan=True,
        pan_and_scan_min_crop_size=256,
        pan_and_scan_max_num_crops=4,
        pan_and_scan_min_ratio_to_activate=1.2,
    ),
    "chameleon": _simple(
        TM + "chameleon.image_processing_pil_chameleon.ChameleonImageProcessorPil"
    ),
    "janus": _simple(
        TM + "janus.image_processing_pil_janus.JanusImageProcessorPil",
        size={"height": 384, "width": 384},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    ),
}

# Small, tiled, padded, squashed, upscaled, strip-like and odd-margin sizes.
SIZES = [(640, 480), (300, 1000), (1300, 700), (97, 61), (1000, 212), (561, 560)]


def agreement(ours: list[np.ndarray], ref: list[np.ndarray]) -> float:
    assert [a.shape for a in ours] == [r.shape for r in ref]
    pairs = zip(ours, ref, strict=True)
    close = sum(int((np.abs(a.astype(np.int16) - r.astype(np.int16)) <= 1).sum()) for a, r in pairs)
    return close / sum(a.size for a in ours)


@pytest.mark.parametrize("spec", sorted(REFERENCES))
def test_tiles_match_reference_processor(spec):
    preset = get_preset(spec)
    for i, (w, h) in enumerate(SIZES):
        image = photo(w, h, seed=i)
        layout = preset.layout(w, h)
        tiles = render_tiles(image, layout, preset.family, preset.params, preset.pixels)
        ours = [np.asarray(t.image) for t in tiles]
        ref = REFERENCES[spec](np.asarray(image))
        assert len(ours) == layout.num_tiles, (spec, w, h)
        assert agreement(ours, ref) >= 0.999, (spec, w, h)
