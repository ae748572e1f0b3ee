"""A small demo catalogue drawn with Pillow, so a fresh install answers from the first minute.

Product-like silhouettes (t-shirts, trousers, dresses, shoes, bags, watches, caps) in several
colours on a white studio background, in Kaggle's layout: ``images/<id>.jpg`` + ``styles.csv``.
Deterministic for a given seed.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "Red": (200, 30, 40),
    "Blue": (30, 70, 190),
    "Black": (25, 25, 25),
    "Green": (30, 140, 60),
    "Yellow": (235, 200, 30),
    "Pink": (235, 120, 170),
    "Grey": (128, 128, 128),
}
STYLE_COLUMNS = ["id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year", "usage", "productDisplayName"]
Draw = Callable[[ImageDraw.ImageDraw, tuple[int, int, int], random.Random, int, int], None]


def _jitter(rng: random.Random, value: float, amount: float) -> int:
    return int(round(value + rng.uniform(-amount, amount)))


def _tshirt(d: ImageDraw.ImageDraw, c: tuple[int, int, int], r: random.Random, w: int, h: int) -> None:
    cx, top, bottom, half = w / 2, _jitter(r, h * 0.18, 3), _jitter(r, h * 0.85, 3), _jitter(r, w * 0.28, 2)
    sleeve = _jitter(r, w * 0.45, 2)
    d.polygon([(cx - half, top), (cx - sleeve, top + 12), (cx - sleeve + 6, top + 22), (cx - half, top + 16),
               (cx - half, bottom), (cx + half, bottom), (cx + half, top + 16), (cx + sleeve - 6, top + 22),
               (cx + sleeve, top + 12), (cx + half, top)], fill=c)
    d.ellipse([cx - 6, top - 4, cx + 6, top + 5], fill=(255, 255, 255))


def _trousers(d: ImageDraw.ImageDraw, c: tuple[int, int, int], r: random.Random, w: int, h: int) -> None:
    cx, top, bottom, half = w / 2, _jitter(r, h * 0.1, 3), _jitter(r, h * 0.92, 3), _jitter(r, w * 0.25, 2)
    d.polygon([(cx - half, top), (cx + half, top), (cx + half + 3, bottom), (cx + 2, bottom), (cx, top + 20),
               (cx - 2, bottom), (cx - half - 3, bottom)], fill=c)


def _dress(d: ImageDraw.ImageDraw, c: tuple[int, int, int], r: random.Random, w: int, h: int) -> None:
    cx, top, bottom = w / 2, _jitter(r, h * 0.1, 3), _jitter(r, h * 0.9, 3)
    waist, hem = _jitter(r, w * 0.15, 2), _jitter(r, w * 0.4, 3)
    d.polygon([(cx - waist, top), (cx + waist, top), (cx + waist - 2, top + 25), (cx + hem, bottom),
               (cx - hem, bottom), (cx - waist + 2, top + 25)], fill=c)


def _shoe(d: ImageDraw.ImageDraw, c: tuple[int, int, int], r: random.Random, w: int, h: int) -> None:
    y = _jitter(r, h * 0.55, 4)
    d.polygon([(6, y - 14), (22, y - 16), (30, y - 4), (w - 6, y + 2), (w - 4, y + 10), (6, y + 10)], fill=c)
    d.rectangle([5, y + 10, w - 4, y + 14], fill=(235, 235, 235) if sum(c) < 600 else (60, 60, 60))


def _handbag(d: ImageDraw.ImageDraw, c: tuple[int, int, int], r: random.Random, w: int, h: int) -> None:
    top, half = _jitter(r, h * 0.4, 3), _jitter(r, w * 0.38, 2)
    d.arc([w / 2 - 14, top - 18, w / 2 + 14, top + 10], 180, 360, fill=c, width=4)
    d.rounded_rectangle([w / 2 - half, top, w / 2 + half, top + _jitter(r, h * 0.4, 3)], radius=5, fill=c)


def _watch(d: ImageDraw.ImageDraw, c: tuple[int, int, int], r: random.Random, w: int, h: int) -> None:
    cx, cy, rad = w / 2, _jitter(r, h / 2, 3), _jitter(r, w * 0.22, 2)
    d.rectangle([cx - 7, 4, cx + 7, h - 4], fill=c)
    d.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=(200, 200, 205), outline=c, width=3)
    d.line([cx, cy, cx, cy - rad + 5], fill=(20, 20, 20), width=2)
    d.line([cx, cy, cx + rad - 6, cy], fill=(20, 20, 20), width=2)


def _cap(d: ImageDraw.ImageDraw, c: tuple[int, int, int], r: random.Random, w: int, h: int) -> None:
    cy, half = _jitter(r, h * 0.5, 4), _jitter(r, w * 0.32, 2)
    d.chord([w / 2 - half, cy - 20, w / 2 + half, cy + 16], 180, 360, fill=c)
    d.polygon([(w / 2 + half - 4, cy - 2), (w - 2, cy + 3), (w / 2 + half - 4, cy + 6)], fill=c)


#: articleType → (masterCategory, subCategory, gender, drawing)
PRODUCTS: dict[str, tuple[str, str, str, Draw]] = {
    "Tshirts": ("Apparel", "Topwear", "Men", _tshirt),
    "Trousers": ("Apparel", "Bottomwear", "Men", _trousers),
    "Dresses": ("Apparel", "Dress", "Women", _dress),
    "Casual Shoes": ("Footwear", "Shoes", "Unisex", _shoe),
    "Handbags": ("Accessories", "Bags", "Women", _handbag),
    "Watches": ("Accessories", "Watches", "Unisex", _watch),
    "Caps": ("Accessories", "Headwear", "Unisex", _cap),
}


def draw_product(article_type: str, colour: str, seed: int, size: tuple[int, int] = (60, 80)) -> Image.Image:
    """One product photo: the article's silhouette in a shade of ``colour`` on white."""
    rng = random.Random(seed)
    base = COLOURS[colour]
    shade = tuple(max(0, min(255, channel + rng.randint(-18, 18))) for channel in base)
    image = Image.new("RGB", size, (255, 255, 255))
    PRODUCTS[article_type][3](ImageDraw.Draw(image), shade, rng, *size)  # type: ignore[arg-type]
    return image


def make_demo_catalogue(root: str | Path, variants: int = 2, seed: int = 7) -> tuple[Path, Path]:
    """Write ``root/images/*.jpg`` and ``root/styles.csv``; returns (images_dir, styles_csv)."""
    root = Path(root)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    product_id = 1000
    for article_type, (master, sub, gender, _) in PRODUCTS.items():
        for colour in COLOURS:
            for variant in range(variants):
                product_id += 1
                draw_product(article_type, colour, seed * 100_003 + product_id).save(images_dir / f"{product_id}.jpg", quality=92)
                name = f"Demo {gender} {colour} {article_type.rstrip('s') if article_type != 'Casual Shoes' else 'Casual Shoe'} {variant + 1}"
                rows.append([product_id, gender, master, sub, article_type, colour, "Summer", 2026, "Casual", name])
    styles = root / "styles.csv"
    with open(styles, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(STYLE_COLUMNS)
        writer.writerows(rows)
    return images_dir, styles
