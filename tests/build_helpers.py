"""Helpers shared by the index build pipeline tests (fixtures live in conftest.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from bot.config import Settings, load_settings
from recommender import Catalogue, CatalogueIndex, CatalogueItem, FeatureExtractor, load_index
from recommender.images import load_image
from standin_bot_api import DEFAULT_TOKEN

COLOURS = [(200, 30, 40), (30, 70, 190), (30, 140, 60), (235, 200, 30)]


def leftovers(out_dir: Path) -> list[str]:
    """Partial or temporary directories left beside an index."""
    return sorted(p.name for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}."))


def rows_by_id(index: CatalogueIndex) -> dict[str, np.ndarray]:
    return {item_id: index.vectors[row] for row, item_id in enumerate(index.ids())}


def subset(catalogue: Catalogue, items: list[CatalogueItem]) -> Catalogue:
    return dataclasses.replace(catalogue, items=list(items), missing_images=[], unlabelled=[])


def make_shop(root: Path, count: int = 3) -> tuple[Path, Path]:
    """A tiny Kaggle-layout catalogue: ``root/images/<id>.png`` (64x64) + ``root/styles.csv``."""
    images = root / "images"
    images.mkdir(parents=True)
    lines = ["id,articleType,baseColour,productDisplayName"]
    for number in range(count):
        image = Image.new("RGB", (64, 64), "white")
        image.paste(COLOURS[number % len(COLOURS)], (8 + number, 12, 56 - number, 60))
        image.save(images / f"{number + 1}.png")
        lines.append(f"{number + 1},Tshirts,Red,Shirt {number + 1}")
    styles = root / "styles.csv"
    styles.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return images, styles


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes, to prove nothing was touched."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def build_args(images: Path, styles: Path, out: Path, *extra: object) -> list[object]:
    """``build_index.py`` arguments for a quick MobileNetV2 build with random weights (TensorFlow, no head: these test the build's plumbing)."""
    return [
        "--images", images, "--styles", styles, "--out", out,
        "--backbone", "mobilenet_v2", "--weights", "none", "--head", "none", "--runtime", "tensorflow", "--quiet", *extra,
    ]  # fmt: skip


def assert_index_is_fresh_extraction(out: Path, extractor: FeatureExtractor, ids: list[str]) -> None:
    """Each product's features equal a fresh extraction of its own photo (no mixed-up rows)."""
    index = load_index(out)
    assert index.ids() == ids
    assert index.manifest.model.weights_fingerprint == extractor.fingerprint
    assert index.features is not None
    for row in range(len(index)):
        expected = extractor.extract(load_image(index.image_path(row)))[0]
        np.testing.assert_allclose(index.features[row], expected, atol=1e-5, err_msg=index.ids()[row])


def bot_settings(**env: str) -> Settings:
    """The bot's settings for a start-up test: MobileNetV2 with random weights, plus ``env``."""
    return load_settings({"TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN, "INDEX_WEIGHTS": "none", "INDEX_BACKBONE": "mobilenet_v2", **env})
