"""Helpers shared by the recommender engine tests (fixtures live in conftest.py)."""

from __future__ import annotations

import atexit
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FASHION_DIR = SHARED / "data" / "fashion-products-4k"
MOBILENET_WEIGHTS = SHARED / "models" / "mobilenet_v2_imagenet_notop.weights.h5"
SCRIPTS = REPO / "scripts"


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """Encode a Pillow image to bytes in ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def perturb_photo(
    path: Path,
    seed: int,
    *,
    scale: float | None = 0.7,
    crop: bool = True,
    quality: int | None = 40,
) -> bytes:
    """A degraded copy of a catalogue photo, as a user might send it.

    Downscaled by ``scale`` (Lanczos, like a browser or phone), 3-5 % cut off each side (a
    different random amount per side), re-encoded as JPEG at ``quality`` (PNG when ``None``).
    """
    rng = np.random.default_rng(seed)
    image = Image.open(path).convert("RGB")
    if scale is not None:
        width, height = image.size
        image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.LANCZOS)
    if crop:
        width, height = image.size
        left, top, right, bottom = rng.uniform(0.03, 0.05, 4)
        image = image.crop((round(width * left), round(height * top), width - round(width * right), height - round(height * bottom)))
    return encode(image, "JPEG", quality=quality) if quality is not None else encode(image, "PNG")


def assert_same_neighbours(
    vectors: np.ndarray,
    queries: np.ndarray,
    result_a: tuple[np.ndarray, np.ndarray],
    result_b: tuple[np.ndarray, np.ndarray],
    atol: float = 1e-5,
) -> None:
    """Two search results agree: same rows and similarities, up to the order of exact ties.

    Each reported similarity must be the true cosine of its row, so a differing row is only
    possible where two candidates score equally (within ``atol``), e.g. duplicate photos.
    """
    rows_a, sims_a = result_a
    rows_b, sims_b = result_b
    assert rows_a.shape == rows_b.shape == sims_a.shape == sims_b.shape
    np.testing.assert_allclose(sims_a, sims_b, atol=atol, rtol=0)
    for rows, sims in result_a, result_b:
        true = np.einsum("qd,qkd->qk", queries.astype(np.float64), vectors[rows].astype(np.float64))
        np.testing.assert_allclose(sims, true, atol=atol, rtol=0)
        assert np.all(np.diff(sims, axis=1) <= atol), "results must be sorted best first"
    for rows in rows_a, rows_b:
        assert all(len(set(row)) == len(row) for row in rows.tolist()), "a row is listed twice"
    # Same similarity at each rank, and each the true cosine of its row: where the rows differ the
    # two candidates score the same, i.e. they are tied (duplicate photos). Away from ties the rows
    # must be identical.
    gaps = np.abs(np.diff(sims_a, axis=1)) > atol
    untied = np.ones(rows_a.shape, dtype=bool)
    untied[:, :-1] &= gaps
    untied[:, 1:] &= gaps
    np.testing.assert_array_equal(rows_a[untied], rows_b[untied])


def labelled_items(*types: str, colour: str = "Red") -> list[dict[str, str]]:
    """Catalogue labels for evaluation tests: one item per article type given, the rest fixed."""
    return [{"articleType": t, "masterCategory": "M", "baseColour": colour, "gender": "Men"} for t in types]


#: ONNX exports of this test session (also of its script processes) go here, never to the user's ~/.cache
os.environ["LOOKALIKE_CACHE_DIR"] = _CACHE = tempfile.mkdtemp(prefix="lookalike-test-cache-")
atexit.register(shutil.rmtree, _CACHE, True)
SCRIPT_ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def script_command(name: str, *args: object) -> list[str]:
    """The command line that runs ``scripts/<name>`` with this interpreter."""
    return [sys.executable, str(SCRIPTS / name), *map(str, args)]


def run_script(name: str, *args: object, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<name>`` as an operator would (in its own process); capture its output."""
    return subprocess.run(
        script_command(name, *args),
        cwd=cwd or REPO,
        env=SCRIPT_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The script's one ``error: ...`` line; fails if it printed a traceback or no such line."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, f"expected one 'error:' line, stderr was:\n{result.stderr}"
    return lines[0]


def write_images(folder: Path, names: list[str], source: Path) -> None:
    """Copy one photo into ``folder`` under each of ``names``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(source, folder / name)


def make_broken_catalogue(tmp_path: Path, photo: Path, setup: str) -> tuple[Path, Path | None]:
    """A catalogue with one typical operator mistake; returns (images_dir, styles_csv or None).

    ``setup``: empty-folder, missing-folder, no-id-column, duplicate-file-id (1.jpg + 1.png),
    duplicate-row, missing-styles, not-utf8 or repeated-column.
    """
    images, styles = tmp_path / "images", tmp_path / "styles.csv"
    if setup == "missing-folder":
        return tmp_path / "nowhere", None
    images.mkdir()
    if setup == "empty-folder":
        (images / "notes.txt").write_text("no photos yet")
        return images, None
    write_images(images, ["1.jpg", "2.jpg"], photo)
    if setup == "duplicate-file-id":
        write_images(images, ["1.png"], photo)
        return images, None
    if setup == "missing-styles":
        return images, styles
    contents = {
        "no-id-column": "sku,name\n1,One\n2,Two\n",
        "duplicate-row": "id,name\n1,One\n2,Two\n1,One again\n",
        "repeated-column": "id,name,name\n1,a,b\n",
    }
    if setup == "not-utf8":
        styles.write_bytes("id,name\n1,Caf\xe9\n".encode("latin-1"))
    else:
        styles.write_text(contents[setup], encoding="utf-8")
    return images, styles
