"""The fast searches (one candidate per row, bisection, largest-first) equal the reference
loops they replace, on many sizes: uniform, log-uniform, strips, exact ratios and the sizes
where ties are decided (canvas multiples, pinpoint sizes, aspect ratios midway)."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from mmtok.presets import Layout, get_preset, list_presets
from mmtok.presets.anyres import best_resolution_finder, select_best_resolution
from mmtok.presets.fit_to_canvas import canvas_finder, optimal_canvas_loop
from mmtok.presets.internvl import closest_grid_finder, closest_grid_loop


def sizes(seed: int, n: int = 20_000, unit: int = 336) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    out = [(1, 1), (1, 9000), (9000, 1), (2, 3), (3, 2)]
    for a in range(1, 13):  # multiples of the tile and aspect ratios of small grids
        for b in range(1, 13):
            out += [(a * unit, b * unit), (a * unit + 1, b * unit), (a * unit, b * unit - 1)]
            out += [(a * 100, b * 100), (3 * a + 3 * b, 2 * a + 2 * b)]  # exact and midway
    while len(out) < n:
        kind = rng.random()
        if kind < 0.4:
            out.append((rng.randint(1, 6000), rng.randint(1, 6000)))
        elif kind < 0.8:
            out.append(
                (
                    int(math.exp(rng.uniform(0, math.log(20000)))),
                    int(math.exp(rng.uniform(0, math.log(20000)))),
                )
            )
        else:
            out.append((rng.randint(1, 40), rng.randint(1, 40)))
    return out


@pytest.mark.parametrize(("tile", "max_tiles"), [(560, 4), (336, 4), (336, 16), (448, 6)])
def test_canvas_finder_equals_the_loop(tile, max_tiles):
    find = canvas_finder(tile, max_tiles)
    for w, h in sizes(1, unit=tile):
        assert find(w, h) == optimal_canvas_loop(w, h, tile, max_tiles), (w, h)


@pytest.mark.parametrize(("min_tiles", "max_tiles"), [(1, 12), (1, 6), (2, 9)])
def test_closest_grid_finder_equals_the_loop(min_tiles, max_tiles):
    find = closest_grid_finder(448, min_tiles, max_tiles)
    for w, h in sizes(2, unit=448):
        assert find(w, h) == closest_grid_loop(w, h, 448, min_tiles, max_tiles), (w, h)


@pytest.mark.parametrize("name", ["llava-next", "llava-onevision"])
def test_best_resolution_finder_equals_the_loop(name):
    pinpoints = get_preset(name).params["pinpoints"]
    find = best_resolution_finder(pinpoints)
    for w, h in sizes(3, unit=get_preset(name).params["tile_size"]):
        assert find(w, h) == select_best_resolution(w, h, pinpoints), (w, h)


def test_canvas_finder_equals_transformers():
    mllama = pytest.importorskip("transformers.models.mllama.image_processing_pil_mllama")
    find = canvas_finder(336, 16)
    for w, h in sizes(4, n=800):
        canvas_h, canvas_w = mllama.get_optimal_tiled_canvas(h, w, 16, 336)
        assert find(w, h) == (canvas_h // 336, canvas_w // 336), (w, h)


def test_layouts_are_immutable_named_records():
    layout = get_preset("qwen2-vl").layout(640, 480)
    assert isinstance(layout, Layout)
    assert layout.image_tokens == 391 and layout.resized == (644, 476)
    with pytest.raises(AttributeError):
        layout.image_tokens = 1  # type: ignore[misc]
    assert layout == Layout(**layout._asdict())


def test_presets_travel_to_workers_with_their_rule():
    for preset in list_presets():
        copy = pickle.loads(pickle.dumps(preset))
        assert copy == preset and copy.layout(1920, 1080) == preset.layout(1920, 1080)
    tuned = get_preset("qwen2-vl:max_pixels=1003520")
    assert pickle.loads(pickle.dumps(tuned)).layout(1920, 1080).image_tokens == 1222


@pytest.mark.parametrize("name", ["qwen2-vl", "qwen3-vl", "emu3"])
def test_smart_resize_in_tokens_equals_transformers(name):
    """The inlined smart_resize (counted in merged tokens) against transformers' own."""
    qwen2 = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
    p = get_preset(name).params
    factor = p["patch_size"] * p["merge_size"]
    layout = get_preset(name).layout
    for w, h in sizes(5, unit=factor) + [(1, 200), (200, 1), (1, 201), (14, 2800), (5, 900)]:
        try:
            h_bar, w_bar = qwen2.smart_resize(h, w, factor, p["min_pixels"], p["max_pixels"])
        except ValueError as e:
            assert layout(w, h).error == str(e), (w, h)
            continue
        x = layout(w, h)
        assert x.resized == (w_bar, h_bar) and x.image_tokens == (h_bar // factor) * (
            w_bar // factor
        )
