"""mmtok's table of pretrained tags says what open_clip 3.3.0's own table says, entry by entry."""

from __future__ import annotations

import pytest

from mmtok.models.preprocess import Preprocess
from mmtok.models.pretrained import FORMS, PRETRAINED, tag_config

CLIP_VITS = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14")


@pytest.mark.parametrize("key", sorted(PRETRAINED), ids=lambda k: f"{k[0]}/{k[1]}")
def test_each_entry_matches_open_clip(key):
    import open_clip

    cfg = open_clip.get_pretrained_cfg(*key)
    assert cfg, f"{key} is no longer an open_clip tag"
    ours = PRETRAINED[key]
    theirs = Preprocess.from_open_clip(cfg)
    assert ours.preprocess.mean == pytest.approx(theirs.mean)
    assert ours.preprocess.std == pytest.approx(theirs.std)
    assert ours.preprocess.interpolation == theirs.interpolation
    assert ours.preprocess.resize_mode == theirs.resize_mode
    assert ours.quick_gelu == bool(cfg.get("quick_gelu"))


def test_the_table_covers_the_families_the_issue_names():
    import open_clip

    vits = {f"{a}{q}" for a in CLIP_VITS for q in ("", "-quickgelu")}
    for arch, tag in open_clip.list_pretrained():
        if arch in vits or "SigLIP" in arch or arch.startswith("MobileCLIP"):
            assert (arch, tag) in PRETRAINED, (arch, tag)


def test_the_known_traps():
    assert PRETRAINED["ViT-B-32", "openai"].quick_gelu  # OpenAI weights need QuickGELU
    assert PRETRAINED["ViT-L-14", "laion2b_s32b_b82k"].preprocess.mean == (0.5, 0.5, 0.5)
    siglip = PRETRAINED["ViT-SO400M-14-SigLIP-384", "webli"]
    assert siglip.form == "siglip" and siglip.preprocess.resize_mode == "squash"
    assert PRETRAINED["ViT-H-14-quickgelu", "dfn5b"].preprocess.resize_mode == "squash"
    assert PRETRAINED["MobileCLIP2-S2", "dfndr2b"].preprocess == FORMS["mobileclip"]


def test_other_tags_fall_back_to_open_clip_and_unknown_ones_to_none():
    fallback = tag_config("RN50", "openai")
    assert fallback is not None and fallback.form == "open_clip" and fallback.quick_gelu
    assert tag_config("ViT-B-32", "no-such-tag") is None


def test_a_tag_with_one_meaning_carries_over_to_a_custom_architecture():
    assert tag_config("my-SigLIP-finetune", "webli") == PRETRAINED["ViT-B-16-SigLIP", "webli"]
    assert tag_config("my-clip", "openai").quick_gelu
    # laion2b_s32b_b82k exists for one architecture only: not enough to generalise
    assert tag_config("my-clip", "laion2b_s32b_b82k") is None
