"""Pillow alone, as the oracle the header walkers are checked against.

`pillow_only` is what mmtok's probe gave before any walker existed: `Image.open` and Pillow's
own `getexif()` (which loads a PNG's pixels when its eXIf chunk may follow them). A walker
must give the same facts, or the same reject reason.
"""

from __future__ import annotations

from mmtok.images.probe import (
    DEFAULT_MAX_PIXELS,
    EXIF_ORIENTATION_TAG,
    BadImage,
    ImageInfo,
    decoder_errors,
    open_image,
    open_source,
    probe_image,
)


def pillow_only(data: bytes) -> ImageInfo | str:
    try:
        with open_source(data) as (fp, size), decoder_errors():
            im = open_image(fp, DEFAULT_MAX_PIXELS)
            orientation = im.getexif().get(EXIF_ORIENTATION_TAG)
            return ImageInfo(
                width=im.width,
                height=im.height,
                format=(im.format or "unknown").lower(),
                mode=im.mode,
                frames=int(getattr(im, "n_frames", 1)),
                exif_orientation=int(orientation) if isinstance(orientation, int) else None,
                file_bytes=size,
            )
    except BadImage as e:
        return e.reason


def probed(data: bytes) -> ImageInfo | str:
    try:
        return probe_image(data)
    except BadImage as e:
        return e.reason
