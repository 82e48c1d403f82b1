"""Oracle: mmtok's layouts against transformers' own image-processor code on random sizes.

Runs where `transformers` is installed (the dev extra installs it, so CI runs it); skips cleanly
elsewhere. Processors are built with explicit published configs, never class defaults, and the
size arithmetic is taken from the processors' own helpers, so no pixels and no hub downloads.
"""

import math
import random
from types import SimpleNamespace

import pytest

transformers = pytest.importorskip("transformers")

from transformers.image_processing_utils import select_best_resolution  # noqa: E402
from transformers.models.emu3 import image_processing_emu3 as emu3  # noqa: E402
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil  # noqa: E402
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil  # noqa: E402
from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor  # noqa: E402
from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor  # noqa: E402
from transformers.models.mllama import image_processing_pil_mllama as mllama  # noqa: E402
from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as qwen2  # noqa: E402

from mmtok.presets import Refused, get_preset  # noqa: E402


def random_sizes(seed: int, n: int = 300) -> list[tuple[int, int]]:
    """Uniform and log-uniform sizes up to 6000 px, plus the awkward ones."""
    rng = random.Random(seed)
    sizes = [(1, 1), (1, 200), (200, 1), (561, 560), (560, 560), (1, 5000), (5000, 1)]
    while len(sizes) < n:
        if rng.random() < 0.5:
            sizes.append((rng.randint(1, 6000), rng.randint(1, 6000)))
        else:
            sizes.append(
                (
                    int(math.exp(rng.uniform(0, math.log(6000)))),
                    int(math.exp(rng.uniform(0, math.log(6000)))),
                )
            )
    return sizes


@pytest.mark.parametrize("name", ["mllama", "llama3-336", "llama4"])
def test_fit_to_canvas_matches_mllama_helpers(name):
    preset = get_preset(name)
    tile, max_tiles = preset.params["tile_size"], preset.params["max_tiles"]
    for w, h in random_sizes(1):
        canvas_h, canvas_w = (
            int(v) for v in mllama.get_optimal_tiled_canvas(h, w, max_tiles, tile)
        )
        new_h, new_w = mllama.get_image_size_fit_to_canvas(h, w, canvas_h, canvas_w, tile)
        layout = preset.layout(w, h)
        assert layout.canvas == (canvas_w, canvas_h), (w, h)
        assert layout.resized == (int(new_w), int(new_h)), (w, h)


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("qwen2-vl", qwen2),
        ("qwen3-vl", qwen2),
        ("emu3", emu3),
        ("qwen2-vl:max_pixels=1003520", qwen2),
    ],
)
def test_smart_resize_matches_transformers(name, module):
    preset = get_preset(name)
    p = preset.params
    factor = p["patch_size"] * p["merge_size"]
    for w, h in random_sizes(2) + [(201, 1), (1, 201), (400, 2)]:
        layout = preset.layout(w, h)
        try:
            rh, rw = module.smart_resize(
                h, w, factor=factor, min_pixels=p["min_pixels"], max_pixels=p["max_pixels"]
            )
        except ValueError:
            assert isinstance(layout, Refused), (w, h)
            continue
        assert layout.resized == (rw, rh) and layout.image_tokens == (rh // factor) * (
            rw // factor
        ), (w, h)


def test_qwen2_image_processor_patch_count():
    processor = qwen2.Qwen2VLImageProcessorPil(
        size={"shortest_edge": 3136, "longest_edge": 12845056},
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
    )
    preset = get_preset("qwen2-vl")
    for w, h in random_sizes(3, 100):
        if max(w, h) / min(w, h) > 200:
            continue
        patches = processor.get_number_of_image_patches(h, w)
        assert preset.layout(w, h).image_tokens == patches // 4, (w, h)


@pytest.mark.parametrize(
    ("name", "longest", "tile"),
    [("idefics3", 1456, 364), ("smolvlm", 1536, 384), ("smolvlm2", 2048, 512)],
)
def test_idefics3_family_matches_processor(name, longest, tile):
    processor = Idefics3ImageProcessorPil(
        size={"longest_edge": longest},
        max_image_size={"longest_edge": tile},
        do_image_splitting=True,
    )
    preset = get_preset(name)
    for w, h in random_sizes(4):
        patches, rows, cols = processor.get_number_of_image_patches(h, w)
        layout = preset.layout(w, h)
        assert layout.num_tiles == patches and layout.grid == (max(rows, 1), max(cols, 1)), (w, h)


def test_internvl_matches_got_ocr2_processor():
    processor = GotOcr2ImageProcessorPil(
        size={"height": 448, "width": 448}, min_patches=1, max_patches=12, crop_to_patches=True
    )
    preset = get_preset("internvl")
    for w, h in random_sizes(5):
        assert preset.layout(w, h).num_tiles == processor.get_number_of_image_patches(h, w), (w, h)


def _processor_self(cls, pinpoints, **attrs):
    """The attributes `_get_number_of_features` reads; the token rule is the class's own code."""
    fake = SimpleNamespace(
        image_processor=SimpleNamespace(image_grid_pinpoints=[list(p) for p in pinpoints]), **attrs
    )
    fake._get_unpadded_features = lambda *a: cls._get_unpadded_features(fake, *a)
    return fake


@pytest.mark.parametrize("name", ["llava-next", "llava-onevision"])
def test_anyres_matches_processor_token_rule(name):
    preset = get_preset(name)
    p = preset.params
    tile = p["tile_size"]
    if name == "llava-next":
        cls, fake = (
            LlavaNextProcessor,
            _processor_self(
                LlavaNextProcessor, p["pinpoints"], patch_size=14, num_additional_image_tokens=1
            ),
        )
        strategy_offset = -1  # vision_feature_select_strategy "default" drops the CLS
    else:
        cls, fake = (
            LlavaOnevisionProcessor,
            _processor_self(
                LlavaOnevisionProcessor,
                p["pinpoints"],
                num_image_tokens=729,
                vision_aspect_ratio="anyres_max_9",
            ),
        )
        strategy_offset = 0
    for w, h in random_sizes(6):
        tokens = cls._get_number_of_features(fake, h, w, tile, tile) + strategy_offset
        best_h, best_w = select_best_resolution((h, w), [list(x) for x in p["pinpoints"]])
        layout = preset.layout(w, h)
        assert layout.image_tokens == tokens and layout.canvas == (best_w, best_h), (w, h)
