"""recommender/onnx_model.py and onnx_export.py: an index that runs on ONNX Runtime (fp32 or int8), without TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recommender import Recommender, build_index, load_index, onnx_export
from recommender.builder import resolve_runtime
from recommender.errors import BuildError, ModelLoadError, ModelMismatchError
from recommender.images import load_image
from recommender.onnx_model import MODEL_FILE, OnnxExtractor, file_sha256, session_options
from scripts.build_index import parse_args
from tests.build_helpers import subset
from tests.recommender_helpers import REPO, SCRIPT_ENV


@pytest.fixture(scope="module")
def onnx_index(demo_catalogue, mobilenet_random, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "index"
    report = build_index(demo_catalogue, out, mobilenet_random, runtime="onnx", precision="fp32", refine="none")
    assert report.runtime == "onnx" and report.runtime_report is not None and report.runtime_report.precision == "fp32"
    assert 0 < report.runtime_seconds < report.seconds  # preparing the model, reported apart from the extraction rate
    return out


def test_an_fp32_onnx_index_holds_its_model_and_matches_tensorflow(onnx_index, demo_catalogue, mobilenet_random):
    index = load_index(onnx_index)
    runtime = index.manifest.runtime
    assert runtime["name"] == "onnx" and runtime["precision"] == "fp32" and runtime["file"] == MODEL_FILE
    assert runtime["sha256"] == file_sha256(onnx_index / MODEL_FILE)
    assert index.manifest.model.runtime == "onnx-fp32"
    assert json.loads((onnx_index / "manifest.json").read_text())["runtime"] == "onnx-fp32"
    pixels = np.stack([load_image(demo_catalogue.images_dir / item.image) for item in demo_catalogue.items[:6]])
    tensorflow = mobilenet_random.extract(pixels)
    np.testing.assert_allclose(index.vectors[:6], tensorflow, atol=2e-4)  # the same graph, another runtime
    served = Recommender(onnx_index).load().extractor
    assert served is not None
    np.testing.assert_allclose(served.extract(pixels), tensorflow, atol=2e-4)
    # A server (the bot) keeps no memory arena between passes, and gets the same features.
    server = Recommender(onnx_index, serving=True).load().extractor
    assert isinstance(server, OnnxExtractor) and isinstance(served, OnnxExtractor)
    assert served.memory_arena and not server.memory_arena
    assert not session_options(memory_arena=False).enable_cpu_mem_arena and session_options().enable_cpu_mem_arena
    np.testing.assert_allclose(server.extract(pixels), tensorflow, atol=2e-4)


def test_serving_an_onnx_index_never_imports_tensorflow(onnx_index, demo_photo):
    program = (
        "import sys; from recommender import Recommender; "
        f"matches = Recommender({str(onnx_index)!r}, serving=True).load().recommend({str(demo_photo)!r}, k=5); "
        "print(len(matches), *(name in sys.modules for name in ('tensorflow', 'keras', 'sklearn', 'pandas')))"
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, env=SCRIPT_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # Nor scikit-learn (150 MB of a bot's memory): one photo's search is a matrix product.
    assert result.stdout.split() == ["5", "False", "False", "False", "False"]


def test_int8_is_kept_when_it_agrees_with_fp32_and_refused_when_not(demo_catalogue, mobilenet_random, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "MIN_MEDIAN_COSINE", 0.0)
    monkeypatch.setattr(onnx_export, "MIN_LOW_COSINE", 0.0)
    monkeypatch.setattr(onnx_export, "MIN_TOP5_OVERLAP", 0.0)
    kept = build_index(demo_catalogue, tmp_path / "int8", mobilenet_random, runtime="onnx", precision="int8", refine="none")
    assert kept.runtime_report is not None and kept.runtime_report.precision == "int8" and not kept.runtime_report.refused
    index = load_index(tmp_path / "int8")
    figures = index.manifest.runtime["fidelity"]
    assert index.manifest.model.runtime == "onnx-int8" and 0.0 < figures["cosine_median"] <= 1.0001 and figures["photos"] > 0
    assert len(Recommender(tmp_path / "int8").load().recommend(demo_catalogue.images_dir / demo_catalogue.items[0].image, k=3)) == 3

    monkeypatch.setattr(onnx_export, "MIN_TOP5_OVERLAP", 1.01)  # no quantised model can pass this
    refused = build_index(demo_catalogue, tmp_path / "refused", mobilenet_random, runtime="onnx", precision="int8", refine="none")
    assert refused.runtime_report is not None and refused.runtime_report.precision == "fp32"
    assert "top-5 overlap" in refused.runtime_report.refused and refused.runtime_report.cached  # both models came from the cache
    runtime = load_index(tmp_path / "refused").manifest.runtime
    assert runtime["precision"] == "fp32" and runtime["requested_precision"] == "int8" and "top-5 overlap" in runtime["int8_refused"]


def test_update_runs_the_index_own_model_and_refuses_another_runtime(onnx_index, demo_catalogue, mobilenet_random, tmp_path):
    out = tmp_path / "index"
    first = subset(demo_catalogue, demo_catalogue.items[:20])
    build_index(first, out, mobilenet_random, runtime="onnx", precision="fp32", refine="none")
    model_sha = file_sha256(out / MODEL_FILE)
    updated = build_index(demo_catalogue, out, mobilenet_random, update=True, refine="none")  # runtime: what the index has
    assert updated.runtime == "onnx" and updated.reused == 20 and updated.extracted == len(demo_catalogue) - 20
    assert file_sha256(out / MODEL_FILE) == model_sha
    np.testing.assert_allclose(load_index(out).vectors, load_index(onnx_index).vectors, atol=1e-5)  # same rows as a fresh build

    with pytest.raises(ModelMismatchError, match="runtime"):
        build_index(demo_catalogue, out, mobilenet_random, update=True, runtime="tensorflow", refine="none")
    with pytest.raises(BuildError, match="--precision int8 needs a rebuild"):
        build_index(demo_catalogue, out, mobilenet_random, update=True, precision="int8", refine="none")


def test_a_swapped_or_missing_model_file_is_refused(onnx_index, tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(onnx_index, damaged)
    with open(damaged / MODEL_FILE, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelLoadError, match="checksum"):
        Recommender(damaged).load()
    (damaged / MODEL_FILE).unlink()
    with pytest.raises(ModelLoadError, match="not found"):
        Recommender(damaged).load()


def test_runtime_options_and_their_defaults(demo_index):
    assert parse_args(["--images", "i", "--out", "o"]).runtime == "auto"
    assert parse_args(["--images", "i", "--out", "o", "--runtime", "onnx", "--precision", "fp32"]).precision == "fp32"
    assert resolve_runtime(None, None) == ("tensorflow", "fp32")  # the library's default
    assert resolve_runtime("auto", None) == ("onnx", "int8")  # the build script's
    assert resolve_runtime("auto", None, demo_index.load()) == ("tensorflow", "fp32")
    assert resolve_runtime("onnx", None) == ("onnx", "int8")
    assert resolve_runtime("onnx", "fp32") == ("onnx", "fp32")
    assert resolve_runtime(None, None, demo_index.load()) == ("tensorflow", "fp32")  # an update keeps a TensorFlow index's
    with pytest.raises(BuildError, match="needs --runtime onnx"):
        resolve_runtime("tensorflow", "int8")
    with pytest.raises(BuildError, match="Unknown --runtime"):
        resolve_runtime("tflite", None)


def test_fidelity_figures_and_the_guard():
    rng = np.random.default_rng(0)
    fp32 = rng.standard_normal((40, 16)).astype(np.float32)
    fp32 /= np.linalg.norm(fp32, axis=1, keepdims=True)
    same = onnx_export.fidelity(fp32, fp32)
    assert same["cosine_median"] == pytest.approx(1.0) and same["top5_overlap"] == 1.0 and same["photos"] == 40
    assert onnx_export.refusal(same) == ""
    noisy = fp32 + 0.8 * rng.standard_normal(fp32.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    figures = onnx_export.fidelity(fp32, noisy)
    assert figures["cosine_median"] < 0.9 and figures["top5_overlap"] < 0.6
    assert "median cosine" in onnx_export.refusal(figures) and "top-5 overlap" in onnx_export.refusal(figures)
    few = onnx_export.fidelity(fp32[:4], fp32[:4])  # too few photos for neighbours: judged on the cosines
    assert "top5_overlap" not in few and onnx_export.refusal(few) == ""
