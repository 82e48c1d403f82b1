"""The preprocessing and activation of common open_clip pretrained tags, carried as data.

open_clip applies a tag's preprocessing only when it downloads the tag itself: a bare checkpoint
file (`pretrained="/path/file.bin"`) silently gets the defaults (OpenAI mean/std, shortest side +
crop), and OpenAI-style weights never get QuickGELU unless asked (`factory.py`, 3.3.0). mmtok
looks the tag up here, so `--checkpoint FILE --pretrained-tag TAG` embeds as the tag would.

The table lists open_clip 3.3.0's `get_pretrained_cfg(arch, tag)` for the ViT-B-32, ViT-B-16,
ViT-L-14, ViT-H-14, SigLIP/SigLIP2 and MobileCLIP families (checked entry by entry in
tests/models/test_pretrained.py); other tags fall back to open_clip's own table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mmtok.errors import MmtokError
from mmtok.models.preprocess import OPENAI_MEAN, OPENAI_STD, Preprocess

_INCEPTION = (0.5, 0.5, 0.5)
# Named preprocessing forms; the size comes from the model's vision config.
FORMS: dict[str, Preprocess] = {
    "clip": Preprocess(),
    "clip-bilinear": Preprocess(interpolation="bilinear"),
    "clip-squash": Preprocess(resize_mode="squash"),
    "inception": Preprocess(mean=_INCEPTION, std=_INCEPTION),
    "siglip": Preprocess(mean=_INCEPTION, std=_INCEPTION, resize_mode="squash"),
    "mobileclip": Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear"),
}
assert FORMS["clip"].mean == OPENAI_MEAN and FORMS["clip"].std == OPENAI_STD

# architecture, tag, preprocessing form, and "quickgelu" where the weights were trained with it.
_TABLE = """
ViT-B-32                       openai                         clip              quickgelu
ViT-B-32                       laion400m_e31                  clip              quickgelu
ViT-B-32                       laion400m_e32                  clip              quickgelu
ViT-B-32                       laion2b_e16                    clip
ViT-B-32                       laion2b_s34b_b79k              clip
ViT-B-32                       datacomp_xl_s13b_b90k          clip
ViT-B-32                       datacomp_m_s128m_b4k           clip
ViT-B-32                       commonpool_m_clip_s128m_b4k    clip
ViT-B-32                       commonpool_m_laion_s128m_b4k   clip
ViT-B-32                       commonpool_m_image_s128m_b4k   clip
ViT-B-32                       commonpool_m_text_s128m_b4k    clip
ViT-B-32                       commonpool_m_basic_s128m_b4k   clip
ViT-B-32                       commonpool_m_s128m_b4k         clip
ViT-B-32                       datacomp_s_s13m_b4k            clip
ViT-B-32                       commonpool_s_clip_s13m_b4k     clip
ViT-B-32                       commonpool_s_laion_s13m_b4k    clip
ViT-B-32                       commonpool_s_image_s13m_b4k    clip
ViT-B-32                       commonpool_s_text_s13m_b4k     clip
ViT-B-32                       commonpool_s_basic_s13m_b4k    clip
ViT-B-32                       commonpool_s_s13m_b4k          clip
ViT-B-32                       metaclip_400m                  clip              quickgelu
ViT-B-32                       metaclip_fullcc                clip              quickgelu
ViT-B-16                       openai                         clip              quickgelu
ViT-B-16                       laion400m_e31                  clip
ViT-B-16                       laion400m_e32                  clip
ViT-B-16                       laion2b_s34b_b88k              clip
ViT-B-16                       datacomp_xl_s13b_b90k          clip
ViT-B-16                       datacomp_l_s1b_b8k             clip
ViT-B-16                       commonpool_l_clip_s1b_b8k      clip
ViT-B-16                       commonpool_l_laion_s1b_b8k     clip
ViT-B-16                       commonpool_l_image_s1b_b8k     clip
ViT-B-16                       commonpool_l_text_s1b_b8k      clip
ViT-B-16                       commonpool_l_basic_s1b_b8k     clip
ViT-B-16                       commonpool_l_s1b_b8k           clip
ViT-B-16                       dfn2b                          clip              quickgelu
ViT-B-16                       metaclip_400m                  clip              quickgelu
ViT-B-16                       metaclip_fullcc                clip              quickgelu
ViT-L-14                       openai                         clip              quickgelu
ViT-L-14                       laion400m_e31                  clip
ViT-L-14                       laion400m_e32                  clip
ViT-L-14                       laion2b_s32b_b82k              inception
ViT-L-14                       datacomp_xl_s13b_b90k          clip
ViT-L-14                       commonpool_xl_clip_s13b_b90k   clip
ViT-L-14                       commonpool_xl_laion_s13b_b90k  clip
ViT-L-14                       commonpool_xl_s13b_b90k        clip
ViT-L-14                       metaclip_400m                  clip              quickgelu
ViT-L-14                       metaclip_fullcc                clip              quickgelu
ViT-L-14                       dfn2b                          clip              quickgelu
ViT-L-14                       dfn2b_s39b                     clip
ViT-L-14-336                   openai                         clip              quickgelu
ViT-H-14                       laion2b_s32b_b79k              clip
ViT-H-14                       metaclip_fullcc                clip              quickgelu
ViT-H-14                       metaclip_altogether            clip
ViT-H-14                       dfn5b                          clip-squash       quickgelu
ViT-B-16-SigLIP                webli                          siglip
ViT-B-16-SigLIP-256            webli                          siglip
ViT-B-16-SigLIP-i18n-256       webli                          siglip
ViT-B-16-SigLIP-384            webli                          siglip
ViT-B-16-SigLIP-512            webli                          siglip
ViT-L-16-SigLIP-256            webli                          siglip
ViT-L-16-SigLIP-384            webli                          siglip
ViT-SO400M-14-SigLIP           webli                          siglip
ViT-SO400M-16-SigLIP-i18n-256  webli                          siglip
ViT-SO400M-14-SigLIP-378       webli                          siglip
ViT-SO400M-14-SigLIP-384       webli                          siglip
ViT-B-32-SigLIP2-256           webli                          siglip
ViT-B-16-SigLIP2               webli                          siglip
ViT-B-16-SigLIP2-256           webli                          siglip
ViT-B-16-SigLIP2-384           webli                          siglip
ViT-B-16-SigLIP2-512           webli                          siglip
ViT-L-16-SigLIP2-256           webli                          siglip
ViT-L-16-SigLIP2-384           webli                          siglip
ViT-L-16-SigLIP2-512           webli                          siglip
ViT-SO400M-14-SigLIP2          webli                          siglip
ViT-SO400M-14-SigLIP2-378      webli                          siglip
ViT-SO400M-16-SigLIP2-256      webli                          siglip
ViT-SO400M-16-SigLIP2-384      webli                          siglip
ViT-SO400M-16-SigLIP2-512      webli                          siglip
ViT-gopt-16-SigLIP2-256        webli                          siglip
ViT-gopt-16-SigLIP2-384        webli                          siglip
MobileCLIP-S1                  datacompdr                     mobileclip
MobileCLIP-S2                  datacompdr                     mobileclip
MobileCLIP-B                   datacompdr                     mobileclip
MobileCLIP-B                   datacompdr_lt                  mobileclip
MobileCLIP2-B                  dfndr2b                        mobileclip
MobileCLIP2-S0                 dfndr2b                        mobileclip
MobileCLIP2-S2                 dfndr2b                        mobileclip
MobileCLIP2-S3                 dfndr2b                        clip-bilinear
MobileCLIP2-S4                 dfndr2b                        clip-bilinear
MobileCLIP2-L-14               dfndr2b                        clip
ViT-B-32-quickgelu             openai                         clip              quickgelu
ViT-B-32-quickgelu             laion400m_e31                  clip              quickgelu
ViT-B-32-quickgelu             laion400m_e32                  clip              quickgelu
ViT-B-32-quickgelu             metaclip_400m                  clip              quickgelu
ViT-B-32-quickgelu             metaclip_fullcc                clip              quickgelu
ViT-B-16-quickgelu             openai                         clip              quickgelu
ViT-B-16-quickgelu             dfn2b                          clip              quickgelu
ViT-B-16-quickgelu             metaclip_400m                  clip              quickgelu
ViT-B-16-quickgelu             metaclip_fullcc                clip              quickgelu
ViT-L-14-quickgelu             openai                         clip              quickgelu
ViT-L-14-quickgelu             metaclip_400m                  clip              quickgelu
ViT-L-14-quickgelu             metaclip_fullcc                clip              quickgelu
ViT-L-14-quickgelu             dfn2b                          clip              quickgelu
ViT-L-14-336-quickgelu         openai                         clip              quickgelu
ViT-H-14-quickgelu             metaclip_fullcc                clip              quickgelu
ViT-H-14-quickgelu             dfn5b                          clip-squash       quickgelu
"""


@dataclass(frozen=True)
class TagConfig:
    form: str  # a key of FORMS, or "open_clip" when taken from open_clip's table
    preprocess: Preprocess
    quick_gelu: bool


def _parse(text: str) -> dict[tuple[str, str], TagConfig]:
    table = {}
    for line in text.strip().splitlines():
        arch, tag, form, *flags = line.split()
        table[arch, tag] = TagConfig(form, FORMS[form], quick_gelu="quickgelu" in flags)
    return table


PRETRAINED: dict[tuple[str, str], TagConfig] = _parse(_TABLE)


def form(text: str) -> Preprocess:
    """A named preprocessing form (for `--preprocess`)."""
    if text not in FORMS:
        raise MmtokError(
            f"unknown preprocessing {text!r}", hint=f"choose one of {', '.join(FORMS)}"
        )
    return FORMS[text]


def _same_for_every_arch(tag: str) -> TagConfig | None:
    """A tag that means one preprocessing and activation for every architecture in the table
    (e.g. `webli`: SigLIP's squash + 0.5/0.5 for 26 architectures; `openai`: CLIP + QuickGELU),
    so a custom architecture trained that way gets them too."""
    seen = {c for (_, t), c in PRETRAINED.items() if t == tag}
    archs = sum(1 for (_, t) in PRETRAINED if t == tag)
    return seen.pop() if len(seen) == 1 and archs >= 2 else None


def tag_config(arch: str, tag: str) -> TagConfig | None:
    """The preprocessing and activation of `arch` trained as `tag`, or None if nobody knows:
    mmtok's table, then open_clip's own, then a tag that means the same for every architecture."""
    if (arch, tag) in PRETRAINED:
        return PRETRAINED[arch, tag]
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if cfg:
        return TagConfig("open_clip", Preprocess.from_open_clip(cfg), bool(cfg.get("quick_gelu")))
    return _same_for_every_arch(tag)


def with_size(p: Preprocess, size: tuple[int, int]) -> Preprocess:
    return replace(p, size=size)
