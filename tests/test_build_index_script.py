"""scripts/build_index.py run as a real process: operator mistakes give one ``error:`` line."""

from __future__ import annotations

import os

import pytest

from tests.recommender_helpers import error_line, make_broken_catalogue, run_script


@pytest.mark.parametrize(
    "setup, message",
    [
        ("empty-folder", "No images in"),
        ("missing-folder", "Images folder not found"),
        ("no-id-column", "has no 'id' column"),
        ("duplicate-file-id", "Duplicate product id '1': both 1.jpg and 1.png"),
        ("duplicate-row", "styles.csv:4: duplicate id '1'"),
    ],
)
def test_catalogue_mistakes_give_one_error_line(tmp_path, demo_photo, setup, message):
    images, styles = make_broken_catalogue(tmp_path, demo_photo, setup)
    out = tmp_path / "index"
    result = run_script("build_index.py", "--images", images, *(["--styles", styles] if styles else []), "--out", out)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in error_line(result)
    assert not out.exists() and not list(tmp_path.glob(".index.*"))


def test_output_under_a_file_is_refused(tmp_path, demo_photo):
    """An output path that cannot be created (works as root, where permissions don't stop writes)."""
    images, _ = make_broken_catalogue(tmp_path, demo_photo, "duplicate-row")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file")
    result = run_script(
        "build_index.py", "--images", images, "--out", blocker / "index",
        "--backbone", "mobilenet_v2", "--weights", "none", "--quiet",
    )  # fmt: skip
    assert result.returncode == 2
    assert f"Cannot write to {blocker}" in error_line(result)
    assert blocker.read_text() == "a file"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_parent_is_refused(tmp_path, demo_photo):
    images, _ = make_broken_catalogue(tmp_path, demo_photo, "duplicate-row")
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        result = run_script("build_index.py", "--images", images, "--out", parent / "index", "--backbone", "mobilenet_v2", "--weights", "none")
    finally:
        parent.chmod(0o755)
    assert result.returncode == 2
    assert "permission denied" in error_line(result)


def test_bad_option_values_are_refused_before_any_work(tmp_path, demo_photo):
    images, _ = make_broken_catalogue(tmp_path, demo_photo, "duplicate-row")
    result = run_script("build_index.py", "--images", images, "--out", tmp_path / "index", "--backbone", "vgg")
    assert result.returncode == 2 and "invalid choice: 'vgg'" in result.stderr
    result = run_script("build_index.py", "--images", images, "--out", tmp_path / "index", "--weights", tmp_path / "missing.h5")
    assert result.returncode == 2 and "Weights file not found" in error_line(result)
