"""The build checkpoint: interrupted builds resume from saved chunks, damaged or foreign chunks are redone."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from recommender import BuildError, ModelIdentity, build_index, colour, load_index
from recommender.checkpoint import Checkpoint, refuse_foreign_checkpoint
from recommender.output_folder import partial_dir_for
from tests.build_helpers import leftovers, rows_by_id, subset
from tests.recommender_helpers import REPO, SCRIPT_ENV, run_script, script_command


def test_killed_build_resumes_and_matches_an_uninterrupted_one(tmp_path, demo_catalogue, demo_index, demo_index_refined):
    """SIGKILL the real script after its first checkpoint, run it again, compare with demo_index."""
    out = tmp_path / "index"
    partial = partial_dir_for(out)
    arguments = [
        "--images", demo_catalogue.images_dir, "--styles", demo_catalogue.styles_path, "--out", out,
        "--backbone", "resnet50", "--weights", "none", "--head", "none", "--runtime", "tensorflow", "--checkpoint-every", 16, "--batch-size", 16, "--quiet",
    ]  # fmt: skip
    log = tmp_path / "first-run.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(script_command("build_index.py", *arguments), cwd=REPO, env=SCRIPT_ENV, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 150
            while not list(partial.glob("chunk-*.json")):
                assert process.poll() is None, f"build ended before its first checkpoint: {log.read_text()}"
                assert time.monotonic() < deadline, "no checkpoint chunk appeared"
                time.sleep(0.02)
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not out.exists(), "the killed build must not have produced an index"
    done = sum(len(json.loads(p.read_text())["ids"]) for p in partial.glob("chunk-*.json"))
    assert 16 <= done < 98

    result = run_script("build_index.py", *arguments)  # the very same command
    assert result.returncode == 0, result.stderr

    resumed = int(result.stdout.split("Resuming an interrupted build: ")[1].split()[0])
    assert resumed >= done and resumed % 16 == 0
    assert f"{98 - resumed} extracted" in result.stdout
    assert f"0 reused, {resumed} from checkpoint" in result.stdout
    assert "98 products" in result.stdout
    assert "Refinement: label-centroids" in result.stdout  # the default for a labelled catalogue
    index, plain = load_index(out), demo_index.load()
    assert index.ids() == plain.ids()
    assert index.features is not None and index.colours is not None
    np.testing.assert_allclose(index.features, plain.vectors, atol=1e-5)
    np.testing.assert_allclose(index.colours, plain.colours, atol=1e-5)
    np.testing.assert_allclose(index.vectors, demo_index_refined.load().vectors, atol=1e-5)
    assert index.products == plain.products
    assert leftovers(out) == []


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_interrupted_build_with_a_damaged_chunk_resumes_correctly(tmp_path, demo_catalogue, demo_index, resnet_random, damage):
    """Ctrl-C keeps finished chunks; a damaged one is redone without clobbering the later ones."""
    catalogue = subset(demo_catalogue, demo_catalogue.items[:24])
    out = tmp_path / "index"
    calls = []

    def interrupt_on_third_batch(n: int) -> None:
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(catalogue, out, resnet_random, batch_size=4, checkpoint_every=4, on_progress=interrupt_on_third_batch)
    partial = partial_dir_for(out)
    assert sorted(p.name for p in partial.glob("chunk-*.json")) == ["chunk-000000.json", "chunk-000001.json", "chunk-000002.json"]
    chunk = partial / "chunk-000000.npy"  # e.g. a disk that filled up
    chunk.write_bytes(chunk.read_bytes()[: 1000] if damage == "truncated" else b"")

    started = []
    report = build_index(catalogue, out, resnet_random, batch_size=4, checkpoint_every=4, on_start=lambda *a: started.append(a))
    assert started == [(24, 8)]
    assert (report.resumed, report.extracted, report.count) == (8, 16, 24)
    index = load_index(out)
    expected = rows_by_id(demo_index.load())
    assert index.ids() == [item.id for item in catalogue.items]
    assert index.features is not None
    np.testing.assert_allclose(index.features, np.stack([expected[i] for i in index.ids()]), atol=1e-5)
    assert leftovers(out) == []


def test_checkpoint_of_another_model_is_discarded(tmp_path, demo_catalogue, demo_index, resnet_random):
    catalogue = subset(demo_catalogue, demo_catalogue.items[:6])
    out = tmp_path / "index"
    partial = partial_dir_for(out)
    partial.mkdir()
    (partial / "state.json").write_text(json.dumps({"model": {"backbone": "other"}, "images_root": "/x"}))
    (partial / "chunk-000000.json").write_text(json.dumps({"vectors": "chunk-000000.npy", "ids": ["1001"], "skipped": []}))
    np.save(partial / "chunk-000000.npy", np.zeros((1, 2048), np.float32))
    report = build_index(catalogue, out, resnet_random)
    assert (report.resumed, report.extracted) == (0, 6)
    expected = rows_by_id(demo_index.load())
    features = load_index(out).features
    assert features is not None
    np.testing.assert_allclose(features[0], expected["1001"], atol=1e-5)


# --- the checkpoint on its own ------------------------------------------------------------------

MODEL = ModelIdentity(backbone="test", weights_fingerprint="f" * 64, input_size=8, pooling="avg", feature_dim=4)


def rows(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((count, MODEL.feature_dim), dtype=np.float32), rng.random((count, colour.DIM), dtype=np.float32)


def checkpoint_with_one_chunk(directory: Path, images: Path) -> None:
    """A checkpoint that saved one item, as a build interrupted after its first chunk leaves it."""
    first = Checkpoint(directory, MODEL, images, save_every=1)
    first.open()
    first.add(["1"], *rows(1), [])


def chunk_names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("chunk-*.json"))


def test_work_is_saved_every_n_items_and_a_new_checkpoint_resumes_it(tmp_path):
    directory, images = tmp_path / ".index.partial", tmp_path / "images"
    vectors, colours = rows(4)
    checkpoint = Checkpoint(directory, MODEL, images, save_every=3)
    checkpoint.open()

    checkpoint.add(["1", "2"], vectors[:2], colours[:2], [])
    assert chunk_names(directory) == []  # two items pending: not yet a chunk
    checkpoint.add(["3"], vectors[2:3], colours[2:3], [("5", "5.png: broken")])
    assert chunk_names(directory) == ["chunk-000000.json"]
    checkpoint.add(["4"], vectors[3:], colours[3:], [])
    checkpoint.flush()
    assert chunk_names(directory) == ["chunk-000000.json", "chunk-000001.json"]

    resumed = Checkpoint(directory, MODEL, images, save_every=3)
    resumed.open()
    assert resumed.done_ids() == {"1", "2", "3", "4", "5"}
    assert resumed.skipped() == [("5", "5.png: broken")]
    finished = resumed.finished_rows()
    assert "4" in finished and "5" not in finished
    for row, item_id in enumerate(["1", "2", "3", "4"]):
        features, histogram = finished.row(item_id)
        np.testing.assert_array_equal(features, vectors[row])
        np.testing.assert_array_equal(histogram, colours[row])
    finished.close()
    resumed.remove()
    assert not directory.exists()


@pytest.mark.parametrize("change", ["model", "photos-folder"])
def test_work_of_another_model_or_photos_folder_is_discarded(tmp_path, change):
    directory, images = tmp_path / ".index.partial", tmp_path / "images"
    checkpoint_with_one_chunk(directory, images)
    assert chunk_names(directory) == ["chunk-000000.json"]

    if change == "model":
        other = Checkpoint(directory, dataclasses.replace(MODEL, weights_fingerprint="0" * 64), images, save_every=1)
    else:
        other = Checkpoint(directory, MODEL, tmp_path / "other-images", save_every=1)
    other.open()

    assert other.done_ids() == set() and chunk_names(directory) == []


def test_work_with_colour_histograms_of_another_method_is_discarded(tmp_path):
    """A build interrupted before the colour descriptor changed must not mix the two kinds of histogram."""
    directory, images = tmp_path / ".index.partial", tmp_path / "images"
    checkpoint_with_one_chunk(directory, images)
    state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    assert state["colour_histogram"] == colour.describe()
    state["colour_histogram"] = colour.describe(colour.WHITE_THRESHOLD_METHOD)  # as an older build recorded it
    (directory / "state.json").write_text(json.dumps(state), encoding="utf-8")

    resumed = Checkpoint(directory, MODEL, images, save_every=1)
    resumed.open()
    assert resumed.done_ids() == set() and chunk_names(directory) == []


def test_a_damaged_chunk_is_redone_and_no_new_chunk_takes_a_kept_name(tmp_path):
    directory, images = tmp_path / ".index.partial", tmp_path / "images"
    checkpoint = Checkpoint(directory, MODEL, images, save_every=1)
    checkpoint.open()
    checkpoint.add(["1"], *rows(1), [])
    checkpoint.add(["2"], *rows(1, seed=1), [])
    (directory / "chunk-000000.npy").write_bytes(b"")  # e.g. a disk that filled up

    resumed = Checkpoint(directory, MODEL, images, save_every=1)
    resumed.open()
    assert resumed.done_ids() == {"2"}
    vectors, colours = rows(1, seed=2)
    resumed.add(["1"], vectors, colours, [])

    assert chunk_names(directory) == ["chunk-000000.json", "chunk-000001.json", "chunk-000002.json"]
    again = Checkpoint(directory, MODEL, images, save_every=1)
    again.open()
    assert again.done_ids() == {"1", "2"}
    np.testing.assert_array_equal(again.finished_rows().row("1")[0], vectors[0])
    np.testing.assert_array_equal(again.finished_rows().row("2")[0], rows(1, seed=1)[0][0])


def test_a_folder_of_other_files_is_refused_not_cleared(tmp_path):
    directory = tmp_path / ".index.partial"
    directory.mkdir()
    (directory / "thesis.tex").write_text("years of work")

    with pytest.raises(BuildError, match="holds files that are not a checkpoint"):
        Checkpoint(directory, MODEL, tmp_path / "images", save_every=1).open()
    assert (directory / "thesis.tex").read_text() == "years of work"

    (tmp_path / "in-the-way").write_text("a file")
    with pytest.raises(BuildError, match="is in the way"):
        refuse_foreign_checkpoint(tmp_path / "in-the-way")
