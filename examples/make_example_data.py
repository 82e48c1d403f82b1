"""Rebuild examples/images and examples/captions.jsonl from scikit-image's bundled sample data.

Provenance: every source image is one of scikit-image 0.26's bundled samples, all public domain
or CC0 (see skimage/data/_fetchers.py for each image's note). Variants (crops, re-encodes, an
EXIF-rotated copy, one truncated file) are derived here so the example set covers what real
datasets contain. Run: pip download --no-deps scikit-image, unzip the wheel, then
`python make_example_data.py PATH/TO/skimage/data`.
"""

import json
import sys
from pathlib import Path

from PIL import Image

src = Path(sys.argv[1])
out = Path(__file__).parent / "images"
out.mkdir(exist_ok=True)

CAPTIONS = {
    "astronaut": "Portrait of astronaut Eileen Collins in front of a flag.",
    "chelsea": "A tabby cat named Chelsea looking to the side.",
    "coffee": "A cup of coffee with latte art on a saucer.",
    "hubble_deep_field": "Hubble deep field: hundreds of distant galaxies on black.",
    "rocket": "A SpaceX Falcon rocket standing on the launch pad.",
    "retina": "Fundus photograph of a human retina.",
    "ihc": "Immunohistochemistry stain of colon tissue under a microscope.",
    "motorcycle_left": "A red motorcycle parked in a garage, left camera view.",
    "motorcycle_right": "A red motorcycle parked in a garage, right camera view.",
    "camera": "Black and white photo of a man with a camera on a tripod.",
    "coins": "Greek coins from Pompeii on a dark background.",
    "horse": "Silhouette of a horse on a transparent background.",
    "logo": "The scikit-image logo: a snake in a square.",
    "brick": "A brick wall texture.",
    "grass": "A patch of green grass, seen from above.",
    "gravel": "Grey gravel texture.",
    "moon": "Surface of the moon, low contrast.",
    "cell": "A cell under a fluorescence microscope.",
    "clock_motion": "A wall clock blurred by motion.",
    "microaneurysms": "Close-up of microaneurysms in a retina image.",
    "text": "Photo of hand-written text on a page.",
    "page": "A scanned page of printed text with uneven lighting.",
    "color": "Colour wheel test pattern.",
}
# name -> (format, extra save options)
FORMATS = {
    "astronaut": "JPEG",
    "chelsea": "JPEG",
    "coffee": "JPEG",
    "hubble_deep_field": "JPEG",
    "rocket": "JPEG",
    "retina": "JPEG",
    "ihc": "JPEG",
    "motorcycle_left": "JPEG",
    "motorcycle_right": "WEBP",
    "camera": "PNG",
    "coins": "PNG",
    "horse": "PNG",
    "logo": "PNG",
    "brick": "JPEG",
    "grass": "WEBP",
    "gravel": "WEBP",
    "moon": "PNG",
    "cell": "PNG",
    "clock_motion": "PNG",
    "microaneurysms": "PNG",
    "text": "PNG",
    "page": "PNG",
    "color": "PNG",
}
EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}

rows = []


def save(im, name, fmt, caption, **kw):
    path = out / f"{name}.{EXT[fmt]}"
    if fmt == "JPEG" and im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    im.save(path, fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}) | kw)
    rows.append(
        {"image": f"images/{path.name}", "caption": caption, "license": "CC0/public domain"}
    )


for name, caption in CAPTIONS.items():
    candidates = [p for p in src.glob(f"{name}.*") if p.suffix in (".png", ".jpg")]
    im = Image.open(candidates[0])
    im.load()
    save(im, name, FORMATS[name], caption)

# Derived variants: real pixels, shapes that real crawls contain.
hubble = Image.open(src / "hubble_deep_field.jpg")
save(
    hubble.crop((0, 300, 1000, 500)),
    "hubble_strip_1000x200",
    "JPEG",
    "A thin strip of the Hubble deep field.",
)
save(
    hubble.resize((2000, 1744), Image.Resampling.LANCZOS),
    "hubble_upscaled_2000x1744",
    "JPEG",
    "The Hubble deep field, upscaled.",
)
rocket = Image.open(src / "rocket.jpg")
save(
    rocket.crop((200, 0, 380, 427)),
    "rocket_portrait",
    "JPEG",
    "A tall crop of the rocket on its pad.",
)
coffee = Image.open(src / "coffee.png")
save(coffee.resize((150, 100)), "coffee_thumbnail", "JPEG", "A small thumbnail of a cup of coffee.")
save(
    coffee,
    "coffee_progressive",
    "JPEG",
    "A cup of coffee, saved as a progressive JPEG.",
    progressive=True,
)
save(
    coffee.convert("P", palette=Image.Palette.ADAPTIVE, colors=64),
    "coffee_palette",
    "PNG",
    "A cup of coffee in 64 colours.",
)
chelsea = Image.open(src / "chelsea.png")
# Stored rotated 90 degrees with EXIF orientation 6, as phone cameras do.
exif = Image.Exif()
exif[0x0112] = 6
save(
    chelsea.transpose(Image.Transpose.ROTATE_90),
    "chelsea_exif6",
    "JPEG",
    "The cat again, stored sideways with an EXIF rotation.",
    exif=exif.tobytes(),
)
astro = Image.open(src / "astronaut.png")
for w, h in [(640, 480), (1024, 768), (336, 336), (560, 560), (800, 1200)]:
    save(
        astro.resize((w, h), Image.Resampling.BICUBIC),
        f"astronaut_{w}x{h}",
        "JPEG",
        f"The astronaut portrait resized to {w} by {h}.",
    )

# Bad rows that real datasets contain: a truncated download and a path that does not exist.
good = (out / "coffee.jpg").read_bytes()
(out / "coffee_truncated.jpg").write_bytes(good[: len(good) // 2])
rows.append(
    {
        "image": "images/coffee_truncated.jpg",
        "caption": "A download that stopped halfway.",
        "license": "CC0/public domain",
    }
)
rows.append(
    {
        "image": "images/does_not_exist.jpg",
        "caption": "A row whose file was never downloaded.",
        "license": "n/a",
    }
)

with open(Path(__file__).parent / "captions.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print(len(rows), "rows")
