"""Vision tokens a clip costs under a model's video rule: pure functions of (frames, width,
height), like the image presets' `layout`.

Rules (`shared/design/video.md` §1, `shared/design/presets.md` §2b):

* Qwen2-VL / Qwen2.5-VL / Qwen3-VL (qwen-vl-utils `fetch_video`): each frame is resized by
  `smart_resize` to multiples of f = patch x merge (28; 32 for Qwen3) with per-frame pixels in
  [128 f^2, max(min(768 f^2, total / n x 2), int(1.05 x 128 f^2))], where `total` is the
  video's pixel budget; two consecutive frames share one temporal patch, so an odd count is
  padded with the last frame: tokens = ceil(n / 2) x (h / f) x (w / f).
  Budgets: Qwen2-VL `VIDEO_TOTAL_PIXELS = 24576 x 28^2` (QwenLM/Qwen2-VL@487a12d6);
  Qwen2.5-VL `128000 x 28^2 x 0.9` (Qwen2.5-VL@f0af2996); Qwen3-VL `MODEL_SEQ_LEN(128000) x
  32^2 x 0.9` (Qwen3-VL@004d5e0a, = qwen-vl-utils 0.0.14).
* Llama 3 (paper, arXiv 2407.21783 §7): each frame is an image under the `llama3-336` image
  preset (up to 4 tiles of 336 px, 577 tokens each).
* LLaVA-Video / LLaVA-OneVision (LLaVA-VL/LLaVA-NeXT@df179663 `llava_arch.py`): SigLIP 384^2,
  27 x 27 patches pooled 2x (bilinear, ceil) to 14 x 14 = 196 per frame. LLaVA-Video trains
  with `--mm_newline_position grid`: a newline embedding after each of the 14 rows (210 per
  frame, `add_token_per_grid`); OneVision uses the default `one_token`: one per video.
* InternVL (OpenGVLab/InternVL@2410d1db): each frame is one 448 x 448 tile of 256 tokens
  (`max_num=1`; (448 / 14)^2 x 0.5^2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmtok.presets.layout import Refused
from mmtok.presets.smart_resize import dynamic_resolution


@dataclass(frozen=True)
class VideoTokens:
    """One clip under one model's video rule."""

    preset: str
    frames: int  # frames sampled
    frame_size: tuple[int, int]  # (width, height) each frame is resized to (Llama: the canvas)
    vision_tokens: int  # embeddings the LLM consumes for the whole clip

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "frames": self.frames,
            "frame_size": list(self.frame_size),
            "vision_tokens": self.vision_tokens,
        }


TokenRule = Callable[[int, int, int], "VideoTokens | Refused"]  # (frames, width, height)

VIDEO_MIN_TOKENS = 128  # qwen-vl-utils VIDEO_MIN_TOKEN_NUM
VIDEO_MAX_TOKENS = 768  # qwen-vl-utils VIDEO_MAX_TOKEN_NUM
FRAME_FACTOR = 2  # qwen-vl-utils FRAME_FACTOR = the model's temporal_patch_size


def qwen_frame_pixels(frames: int, factor: int, total_pixels: float) -> tuple[int, float]:
    """(min_pixels, max_pixels) per frame: qwen-vl-utils `fetch_video`."""
    min_pixels = VIDEO_MIN_TOKENS * factor * factor
    max_pixels = max(
        min(VIDEO_MAX_TOKENS * factor * factor, total_pixels / frames * FRAME_FACTOR),
        int(min_pixels * 1.05),
    )
    return min_pixels, max_pixels


def qwen_rule(name: str, patch_size: int, total_pixels: float) -> TokenRule:
    factor = patch_size * 2  # merge_size 2

    def rule(frames: int, width: int, height: int) -> VideoTokens | Refused:
        min_pixels, max_pixels = qwen_frame_pixels(frames, factor, total_pixels)
        layout = dynamic_resolution(patch_size, 2, min_pixels, max_pixels, 2, 0, False)(
            width, height
        )
        if isinstance(layout, Refused):
            return layout
        grid_t = math.ceil(frames / FRAME_FACTOR)
        return VideoTokens(name, frames, layout.resized, grid_t * layout.image_tokens)

    return rule


def per_frame_rule(name: str, size: int, tokens_per_frame: int, per_video: int = 0) -> TokenRule:
    """Each frame squashed to `size` x `size`, a fixed number of tokens."""

    def rule(frames: int, width: int, height: int) -> VideoTokens | Refused:
        return VideoTokens(name, frames, (size, size), frames * tokens_per_frame + per_video)

    return rule


def image_preset_rule(name: str, image_preset: str) -> TokenRule:
    """Each frame costs what the image preset charges for one image of the frame's size."""

    def rule(frames: int, width: int, height: int) -> VideoTokens | Refused:
        from mmtok.presets import get_preset

        layout = get_preset(image_preset).layout(width, height)
        if isinstance(layout, Refused):
            return layout
        size = layout.canvas or layout.resized  # the tiles' canvas
        return VideoTokens(name, frames, size, frames * layout.image_tokens)

    return rule


TOKEN_RULES: dict[str, TokenRule] = {
    "qwen2-vl": qwen_rule("qwen2-vl", 14, 24576 * 28 * 28),
    "qwen2.5-vl": qwen_rule("qwen2.5-vl", 14, int(float(128000 * 28 * 28 * 0.9))),
    "qwen3-vl": qwen_rule("qwen3-vl", 16, 128000 * 32 * 32 * 0.9),
    "llama3-336": image_preset_rule("llama3-336", "llama3-336"),
    "llava-video": per_frame_rule("llava-video", 384, 196 + 14),
    "llava-onevision": per_frame_rule("llava-onevision", 384, 196, per_video=1),
    "internvl": per_frame_rule("internvl", 448, 256),
}


def video_tokens(preset: str, frames: int, width: int, height: int) -> VideoTokens | Refused:
    """Vision tokens of `frames` sampled frames of a `width` x `height` video under `preset`."""
    return TOKEN_RULES[preset](frames, width, height)
