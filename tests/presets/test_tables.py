"""The design note's measured tables (../shared/design/presets.md), one parametrised case per row.

Sizes are W x H; grids rows x cols. Each row was measured by running the reference processor.
"""

import pytest

from mmtok.presets import Layout, Refused, get_preset


def size(text):
    w, h = text.split("x")
    return int(w), int(h)


def check(preset, wh, resized=None, canvas=None, grid=None, tiles=None, tokens=None, prompt=None):
    layout = get_preset(preset).layout(*size(wh))
    assert isinstance(layout, Layout), layout
    if resized:
        assert layout.resized == size(resized)
    if canvas:
        assert layout.canvas == size(canvas)
    if grid:
        assert layout.grid == size(grid)[::-1][::-1] and layout.grid == tuple(
            int(v) for v in grid.split("x")
        )
    if tiles is not None:
        assert layout.num_tiles == tiles
    if tokens is not None:
        assert layout.image_tokens == tokens
    if prompt is not None:
        assert layout.prompt_tokens == prompt


MLLAMA = [  # W x H, resized, canvas, rows x cols, tiles, tokens
    ("1x1", "560x560", "560x560", "1x1", 1, 1601),
    ("300x600", "300x600", "560x1120", "2x1", 2, 3202),
    ("600x300", "600x300", "1120x560", "1x2", 2, 3202),
    ("27x27", "560x560", "560x560", "1x1", 1, 1601),
    ("336x336", "560x560", "560x560", "1x1", 1, 1601),
    ("560x560", "560x560", "560x560", "1x1", 1, 1601),
    ("561x560", "561x560", "1120x560", "1x2", 2, 3202),
    ("640x480", "640x480", "1120x560", "1x2", 2, 3202),
    ("1200x600", "1120x560", "1120x560", "1x2", 2, 3202),
    ("1920x1080", "1120x630", "1120x1120", "2x2", 4, 6404),
    ("4032x3024", "1120x840", "1120x1120", "2x2", 4, 6404),
    ("3024x4032", "840x1120", "1120x1120", "2x2", 4, 6404),
    ("13x4000", "7x2240", "560x2240", "4x1", 4, 6404),
    ("1x5000", "1x2240", "560x2240", "4x1", 4, 6404),
    ("5000x1", "2240x1", "2240x560", "1x4", 4, 6404),
]

LLAMA3_336 = [
    ("1x1", "336x336", "336x336", "1x1", 1, 577),
    ("27x27", "336x336", "336x336", "1x1", 1, 577),
    ("336x336", "336x336", "336x336", "1x1", 1, 577),
    ("560x560", "560x560", "672x672", "2x2", 4, 2308),
    ("561x560", "561x560", "672x672", "2x2", 4, 2308),
    ("640x480", "640x480", "672x672", "2x2", 4, 2308),
    ("1200x600", "672x336", "672x336", "1x2", 2, 1154),
    ("1920x1080", "672x378", "672x672", "2x2", 4, 2308),
    ("4032x3024", "672x504", "672x672", "2x2", 4, 2308),
    ("3024x4032", "504x672", "672x672", "2x2", 4, 2308),
    ("13x4000", "4x1344", "336x1344", "4x1", 4, 2308),
    ("1x5000", "1x1344", "336x1344", "4x1", 4, 2308),
    ("5000x1", "1344x1", "1344x336", "1x4", 4, 2308),
]

LLAMA4 = [  # W x H, resized, canvas, rows x cols, chunks incl. global, patches, prompt
    ("1x1", "336x336", "336x336", "1x1", 1, 144, 147),
    ("27x27", "336x336", "336x336", "1x1", 1, 144, 147),
    ("336x336", "336x336", "336x336", "1x1", 1, 144, 147),
    ("560x560", "560x560", "672x672", "2x2", 5, 720, 727),
    ("561x560", "561x560", "672x672", "2x2", 5, 720, 727),
    ("640x480", "640x480", "672x672", "2x2", 5, 720, 727),
    ("1200x600", "1200x600", "1344x672", "2x4", 9, 1296, 1307),
    ("1920x1080", "1680x945", "1680x1008", "3x5", 16, 2304, 2322),
    ("4032x3024", "1344x1008", "1344x1008", "3x4", 13, 1872, 1887),
    ("3024x4032", "1008x1344", "1008x1344", "4x3", 13, 1872, 1887),
    ("13x4000", "13x4000", "336x4032", "12x1", 13, 1872, 1887),
    ("1x5000", "1x5000", "336x5040", "15x1", 16, 2304, 2322),
    ("5000x1", "5000x1", "5040x336", "1x15", 16, 2304, 2322),
]


@pytest.mark.parametrize(("wh", "resized", "canvas", "grid", "tiles", "tokens"), MLLAMA)
def test_mllama(wh, resized, canvas, grid, tiles, tokens):
    check("mllama", wh, resized, canvas, grid, tiles, tokens, prompt=1)


@pytest.mark.parametrize(("wh", "resized", "canvas", "grid", "tiles", "tokens"), LLAMA3_336)
def test_llama3_336(wh, resized, canvas, grid, tiles, tokens):
    check("llama3-336", wh, resized, canvas, grid, tiles, tokens, prompt=1)


@pytest.mark.parametrize(("wh", "resized", "canvas", "grid", "tiles", "tokens", "prompt"), LLAMA4)
def test_llama4(wh, resized, canvas, grid, tiles, tokens, prompt):
    check("llama4", wh, resized, canvas, grid, tiles, tokens, prompt)


QWEN2 = [  # W x H, resized, grid (h/28 x w/28 merged), tokens, fp32 bytes
    ("1x1", "56x56", 4, 75264),
    ("14x14", "56x56", 4, 75264),
    ("27x27", "56x56", 4, 75264),
    ("42x42", "56x56", 4, 75264),
    ("70x70", "56x56", 4, 75264),
    ("98x98", "112x112", 16, 301056),
    ("126x126", "112x112", 16, 301056),
    ("200x1", "812x28", 29, 545664),
    ("400x2", "812x28", 29, 545664),
    ("336x336", "336x336", 144, 2709504),
    ("560x560", "560x560", 400, 7526400),
    ("640x480", "644x476", 391, 7357056),
    ("1280x720", "1288x728", 1196, 22503936),
    ("1920x1080", "1932x1092", 2691, 50633856),
    ("3840x2160", "3836x2156", 10549, 198489984),
    ("4032x3024", "4032x3024", 15552, 292626432),
    ("10000x10000", "3556x3556", 16129, 303483264),
]
QWEN2_CLASS_DEFAULT = [
    ("640x480", "644x476", 391),
    ("1280x720", "1288x728", 1196),
    ("1920x1080", "1316x728", 1222),
    ("4032x3024", "1148x840", 1230),
    ("10000x10000", "980x980", 1225),
]
QWEN3 = [
    ("1x1", "256x256", 64),
    ("200x1", "3648x32", 114),
    ("336x336", "320x320", 100),
    ("560x560", "576x576", 324),
    ("640x480", "640x480", 300),
    ("1280x720", "1280x704", 880),
    ("1920x1080", "1920x1088", 2040),
    ("4032x3024", "4032x3008", 11844),
    ("10000x10000", "4096x4096", 16384),
]


@pytest.mark.parametrize(("wh", "resized", "tokens", "fp32"), QWEN2)
@pytest.mark.parametrize("name", ["qwen2-vl", "qwen2.5-vl"])
def test_qwen2_vl(name, wh, resized, tokens, fp32):
    check(name, wh, resized, tokens=tokens, prompt=tokens + 2)
    assert get_preset(name).layout(*size(wh)).pixel_bytes_fp32 == fp32


@pytest.mark.parametrize(("wh", "resized", "tokens"), QWEN2_CLASS_DEFAULT)
def test_qwen2_vl_class_default_max_pixels(wh, resized, tokens):
    check("qwen2-vl:max_pixels=1003520", wh, resized, tokens=tokens)


@pytest.mark.parametrize(("wh", "resized", "tokens"), QWEN3)
def test_qwen3_vl(wh, resized, tokens):
    check("qwen3-vl", wh, resized, tokens=tokens)


@pytest.mark.parametrize("name", ["qwen2-vl", "qwen3-vl", "emu3"])
@pytest.mark.parametrize("wh", ["201x1", "1x201", "5000x3"])
def test_aspect_ratio_over_200_is_refused(name, wh):
    result = get_preset(name).layout(*size(wh))
    assert isinstance(result, Refused) and "aspect ratio must be smaller than 200" in result.error
    assert isinstance(get_preset(name).layout(200, 1), Layout)  # exactly 200 passes


LLAVA15 = ["1x1", "640x480", "1920x1080", "13x4000", "1x5000"]


@pytest.mark.parametrize("wh", LLAVA15)
def test_llava15(wh):
    check("llava-1.5", wh, "336x336", tokens=576)
    assert get_preset("llava-1.5").layout(*size(wh)).pixel_bytes_fp32 == 1354752


LLAVA_NEXT = [  # W x H, canvas, rows x cols, resized content, tiles incl. base, tokens
    ("1x1", "672x336", "1x2", "336x336", 3, 1176),
    ("300x600", "336x672", "2x1", "336x672", 3, 1776),
    ("600x300", "672x336", "1x2", "672x336", 3, 1752),
    ("27x27", "672x336", "1x2", "336x336", 3, 1176),
    ("336x336", "672x336", "1x2", "336x336", 3, 1176),
    ("560x560", "672x672", "2x2", "672x672", 5, 2928),
    ("561x560", "672x672", "2x2", "672x671", 5, 2928),
    ("640x480", "672x672", "2x2", "672x504", 5, 2340),
    ("1200x600", "672x336", "1x2", "672x336", 3, 1752),
    ("1920x1080", "672x672", "2x2", "672x378", 5, 1948),
    ("4032x3024", "672x672", "2x2", "672x504", 5, 2340),
    ("3024x4032", "672x672", "2x2", "504x672", 5, 2352),
    ("13x4000", "336x1008", "3x1", "4x1008", 4, 648),
    ("1x5000", "672x336", "1x2", "1x336", 3, 600),
    ("5000x1", "672x336", "1x2", "672x1", 3, 576),
]
ONEVISION = [  # W x H, canvas, rows x cols, tiles incl. base, tokens
    ("1x1", "384x384", "1x1", 2, 1485),
    ("27x27", "384x384", "1x1", 2, 1485),
    ("336x336", "384x384", "1x1", 2, 1485),
    ("560x560", "768x768", "2x2", 5, 3699),
    ("561x560", "768x768", "2x2", 5, 3699),
    ("640x480", "768x768", "2x2", 5, 2929),
    ("1200x600", "1536x768", "2x4", 9, 6615),
    ("1920x1080", "1920x1152", "3x5", 16, 7269),
    ("4032x3024", "2304x1920", "5x6", 31, 7309),
    ("3024x4032", "1920x2304", "6x5", 31, 7332),
    ("13x4000", "384x2304", "6x1", 7, 1053),
    ("1x5000", "384x384", "1x1", 2, 783),
    ("5000x1", "384x384", "1x1", 2, 757),
]


@pytest.mark.parametrize(("wh", "canvas", "grid", "resized", "tiles", "tokens"), LLAVA_NEXT)
def test_llava_next(wh, canvas, grid, resized, tiles, tokens):
    check("llava-next", wh, resized, canvas, grid, tiles, tokens, prompt=tokens)


@pytest.mark.parametrize(("wh", "canvas", "grid", "tiles", "tokens"), ONEVISION)
def test_llava_onevision(wh, canvas, grid, tiles, tokens):
    check("llava-onevision", wh, canvas=canvas, grid=grid, tiles=tiles, tokens=tokens)


# W x H, tile canvas, rows x cols, images, <image> tokens, prompt tokens (per preset)
IDEFICS3 = {
    "idefics3": [
        ("1x1", "1456x1456", "4x4", 17, 2873, 2913),
        ("27x27", "1456x1456", "4x4", 17, 2873, 2913),
        ("336x336", "1456x1456", "4x4", 17, 2873, 2913),
        ("560x560", "1456x1456", "4x4", 17, 2873, 2913),
        ("561x560", "1456x1456", "4x4", 17, 2873, 2913),
        ("640x480", "1456x1092", "3x4", 13, 2197, 2228),
        ("1200x600", "1456x728", "2x4", 9, 1521, 1543),
        ("1920x1080", "1456x1092", "3x4", 13, 2197, 2228),
        ("4032x3024", "1456x1092", "3x4", 13, 2197, 2228),
        ("3024x4032", "1092x1456", "4x3", 13, 2197, 2229),
        ("13x4000", "364x1456", "4x1", 5, 845, 861),
        ("1x5000", "364x1456", "4x1", 5, 845, 861),
        ("5000x1", "1456x364", "1x4", 5, 845, 858),
    ],
    "smolvlm": [
        ("1x1", "1536x1536", "4x4", 17, 1377, 1417),
        ("27x27", "1536x1536", "4x4", 17, 1377, 1417),
        ("336x336", "1536x1536", "4x4", 17, 1377, 1417),
        ("560x560", "1536x1536", "4x4", 17, 1377, 1417),
        ("561x560", "1536x1536", "4x4", 17, 1377, 1417),
        ("640x480", "1536x1152", "3x4", 13, 1053, 1084),
        ("1200x600", "1536x768", "2x4", 9, 729, 751),
        ("1920x1080", "1536x1152", "3x4", 13, 1053, 1084),
        ("4032x3024", "1536x1152", "3x4", 13, 1053, 1084),
        ("3024x4032", "1152x1536", "4x3", 13, 1053, 1085),
        ("13x4000", "384x1536", "4x1", 5, 405, 421),
        ("1x5000", "384x1536", "4x1", 5, 405, 421),
        ("5000x1", "1536x384", "1x4", 5, 405, 418),
    ],
    "smolvlm2": [
        ("1x1", "2048x2048", "4x4", 17, 1088, 1128),
        ("27x27", "2048x2048", "4x4", 17, 1088, 1128),
        ("336x336", "2048x2048", "4x4", 17, 1088, 1128),
        ("560x560", "2048x2048", "4x4", 17, 1088, 1128),
        ("561x560", "2048x2048", "4x4", 17, 1088, 1128),
        ("640x480", "2048x1536", "3x4", 13, 832, 863),
        ("1200x600", "2048x1024", "2x4", 9, 576, 598),
        ("1920x1080", "2048x1536", "3x4", 13, 832, 863),
        ("4032x3024", "2048x1536", "3x4", 13, 832, 863),
        ("3024x4032", "1536x2048", "4x3", 13, 832, 864),
        ("13x4000", "512x2048", "4x1", 5, 320, 336),
        ("1x5000", "512x2048", "4x1", 5, 320, 336),
        ("5000x1", "2048x512", "1x4", 5, 320, 333),
    ],
}


@pytest.mark.parametrize(
    ("preset", "wh", "canvas", "grid", "tiles", "tokens", "prompt"),
    [(p, *row) for p, rows in IDEFICS3.items() for row in rows],
)
def test_idefics3_family(preset, wh, canvas, grid, tiles, tokens, prompt):
    check(preset, wh, canvas=canvas, grid=grid, tiles=tiles, tokens=tokens, prompt=prompt)


INTERNVL = [  # W x H, canvas, rows x cols, tiles incl. thumbnail, tokens
    ("1x1", "448x448", "1x1", 1, 256),
    ("27x27", "448x448", "1x1", 1, 256),
    ("336x336", "448x448", "1x1", 1, 256),
    ("560x560", "448x448", "1x1", 1, 256),
    ("561x560", "448x448", "1x1", 1, 256),
    ("640x480", "1792x1344", "3x4", 13, 3328),
    ("1200x600", "896x448", "1x2", 3, 768),
    ("1920x1080", "1792x896", "2x4", 9, 2304),
    ("4032x3024", "1792x1344", "3x4", 13, 3328),
    ("3024x4032", "1344x1792", "4x3", 13, 3328),
    ("13x4000", "448x5376", "12x1", 13, 3328),
    ("1x5000", "448x5376", "12x1", 13, 3328),
    ("5000x1", "5376x448", "1x12", 13, 3328),
    # the square tie chain from the note: <= 633^2 one tile, 672^2 and 768^2 2x2, >= 951^2 3x3
    ("600x600", "448x448", "1x1", 1, 256),
    ("672x672", "896x896", "2x2", 5, 1280),
    ("1024x1024", "1344x1344", "3x3", 10, 2560),
    ("1280x720", "1792x896", "2x4", 9, 2304),
]


@pytest.mark.parametrize(("wh", "canvas", "grid", "tiles", "tokens"), INTERNVL)
def test_internvl(wh, canvas, grid, tiles, tokens):
    check("internvl", wh, canvas=canvas, grid=grid, tiles=tiles, tokens=tokens, prompt=tokens + 2)


PIXTRAL = [  # W x H, mistral-common resized, rows x cols, [IMG], all image tokens
    ("1x1", "16x16", "1x1", 1, 2),
    ("27x27", "32x32", "2x2", 4, 6),
    ("336x336", "336x336", "21x21", 441, 462),
    ("640x480", "640x480", "30x40", 1200, 1230),
    ("1024x1024", "1024x1024", "64x64", 4096, 4160),
    ("1025x1024", "1024x1024", "64x64", 4096, 4160),
    ("1120x736", "1024x688", "43x64", 2752, 2795),
    ("81x1030", "96x1024", "64x6", 384, 448),
    ("1920x1080", "1024x576", "36x64", 2304, 2340),
    ("4032x3024", "1024x768", "48x64", 3072, 3120),
    ("13x4000", "16x1024", "64x1", 64, 128),
]
MISTRAL3 = [
    ("1x1", "28x28", "1x1", 1, 2),
    ("27x27", "28x28", "1x1", 1, 2),
    ("336x336", "336x336", "12x12", 144, 156),
    ("640x480", "644x504", "18x23", 414, 432),
    ("1024x1024", "1036x1036", "37x37", 1369, 1406),
    ("1025x1024", "1036x1036", "37x37", 1369, 1406),
    ("1120x736", "1120x756", "27x40", 1080, 1107),
    ("81x1030", "84x1036", "37x3", 111, 148),
    ("1920x1080", "1540x868", "31x55", 1705, 1736),
    ("4032x3024", "1540x1176", "42x55", 2310, 2352),
    ("13x4000", "28x1540", "55x1", 55, 110),
    ("2676x1023", "1540x616", "22x55", 1210, 1232),
    ("285x3117", "168x1540", "55x6", 330, 385),
]


@pytest.mark.parametrize(("wh", "resized", "grid", "tokens", "prompt"), PIXTRAL)
def test_pixtral_follows_mistral_common(wh, resized, grid, tokens, prompt):
    check("pixtral", wh, resized, grid=grid, tokens=tokens, prompt=prompt)


@pytest.mark.parametrize(("wh", "resized", "grid", "tokens", "prompt"), MISTRAL3)
def test_mistral3_follows_mistral_common(wh, resized, grid, tokens, prompt):
    check("mistral3", wh, resized, grid=grid, tokens=tokens, prompt=prompt)


def test_pixtral_keeps_one_pixel_strips_where_hf_crashes():
    layout = get_preset("pixtral").layout(1, 5000)
    assert layout.resized == (16, 1024) and layout.image_tokens == 64


GEMMA3_PAN_SCAN = [
    ("640x480", 2, 768),
    ("600x600", 0, 256),
    ("1280x720", 2, 768),
    ("1920x1080", 2, 768),
    ("3000x600", 4, 1280),
    ("1x5000", 0, 256),
    ("13x4000", 0, 256),
]


@pytest.mark.parametrize(("wh", "crops", "tokens"), GEMMA3_PAN_SCAN)
def test_gemma3(wh, crops, tokens):
    check("gemma3", wh, "896x896", tiles=1, tokens=256)
    check("gemma3:pan_and_scan=true", wh, tiles=1 + crops, tokens=tokens)


@pytest.mark.parametrize("wh", ["1x1", "640x480", "1920x1080", "1x5000"])
def test_chameleon(wh):
    check("chameleon", wh, "512x512", tokens=1024, prompt=1026)


EMU3 = [
    ("2x2", "512x512", 4096, 4160),
    ("27x27", "512x512", 4096, 4160),
    ("336x336", "512x512", 4096, 4160),
    ("640x480", "640x480", 4800, 4860),
    ("1024x1024", "1024x1024", 16384, 16512),
    ("1280x720", "1280x720", 14400, 14490),
    ("1920x1080", "1360x768", 16320, 16416),
    ("4032x3024", "1176x880", 16170, 16280),
]


@pytest.mark.parametrize(("wh", "resized", "tokens", "placeholders"), EMU3)
def test_emu3(wh, resized, tokens, placeholders):
    layout = get_preset("emu3").layout(*size(wh))
    assert layout.resized == size(resized) and layout.image_tokens == tokens
    assert (
        layout.prompt_tokens == placeholders + 5
    )  # + start, "h*w" text (assumed 1), image token, extra_201, end


@pytest.mark.parametrize(
    ("wh", "content"), [("640x480", "384x288"), ("1920x1080", "384x216"), ("1x5000", "14x384")]
)
def test_janus(wh, content):
    check("janus", wh, content, canvas="384x384", tokens=576)


GPT4O = [
    ("1x1", "1x1", 255),
    ("512x512", "1x1", 255),
    ("768x768", "2x2", 765),
    ("1024x1024", "2x2", 765),
    ("2048x4096", "3x2", 1105),
    ("1920x1080", "2x3", 1105),
    ("4032x3024", "2x2", 765),
    ("1x5000", "4x1", 765),
]


@pytest.mark.parametrize(("wh", "grid", "tokens"), GPT4O)
def test_gpt4o(wh, grid, tokens):
    check("gpt-4o", wh, grid=grid, tokens=tokens)


KIMI = [
    ("1x1", "1x1", "28x28", 1),
    ("27x27", "27x27", "28x28", 1),
    ("336x336", "336x336", "336x336", 144),
    ("640x480", "640x480", "644x504", 414),
    ("1920x1080", "1196x672", "1204x672", 1032),
    ("4032x3024", "1034x775", "1036x784", 1036),
    ("10000x10000", "896x896", "896x896", 1024),
    ("1x5000", "1x5000", "28x5012", 179),
]


@pytest.mark.parametrize(("wh", "resized", "padded", "tokens"), KIMI)
def test_kimi_vl(wh, resized, padded, tokens):
    check("kimi-vl", wh, resized, canvas=padded, tokens=tokens)


def test_kimi_vl_refuses_beyond_its_position_embedding():
    result = get_preset("kimi-vl").layout(1, 7200)
    assert isinstance(result, Refused) and "Exceed pos emb" in result.error
