"""The operator build policy shared by build_index.py and the bot: what happens in which order, and the
model fallback only when the caller asks for it (real model, tiny catalogues)."""

from __future__ import annotations

import threading

import pytest

from recommender import BuildError, BuildLockedError, ModelLoadError, load_index
from recommender.operator_build import BuildEvents, build_from_folder
from recommender.output_folder import output_lock
from tests.build_helpers import make_shop


def recording(events: list[str]) -> BuildEvents:
    """BuildEvents that note each event's name (and the fallback's weights) in ``events``."""
    return BuildEvents(
        catalogue_loaded=lambda catalogue: events.append(f"catalogue_loaded {len(catalogue)}"),
        waiting=lambda: events.append("waiting"),
        loading_model=lambda extractor: events.append(f"loading_model {extractor.weights_source}"),
        model_fallback=lambda error, fallback: events.append(f"model_fallback {type(error).__name__} {fallback.weights_source}"),
        building=lambda catalogue, extractor: events.append("building"),
        started=lambda total, done: events.append(f"started {total} {done}"),
        progress=lambda count: events.append(f"progress {count}"),
    )


def test_an_output_that_is_not_ours_is_refused_before_any_model_is_loaded(tmp_path):
    images, styles = make_shop(tmp_path / "shop")
    out = tmp_path / "index"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    events: list[str] = []

    with pytest.raises(BuildError, match="holds no index"):  # not ModelLoadError: the model was never tried
        build_from_folder(images, styles, out, backbone="mobilenet_v2", weights=tmp_path / "missing.h5", events=recording(events))

    assert events == ["catalogue_loaded 3"]
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_running_build_is_not_waited_for_unless_asked(tmp_path):
    images, styles = make_shop(tmp_path / "shop")
    out = tmp_path / "index"
    events: list[str] = []
    errors: list[BaseException] = []

    def second_build() -> None:
        try:
            build_from_folder(images, styles, out, backbone="mobilenet_v2", weights=tmp_path / "missing.h5", events=recording(events))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with output_lock(out):  # another build holds the folder
        other = threading.Thread(target=second_build)
        other.start()
        other.join()

    assert [type(error) for error in errors] == [BuildLockedError]
    assert events == ["catalogue_loaded 3"]


def test_weights_that_fail_to_load_fall_back_only_when_the_caller_asks(tmp_path, mobilenet_random):
    images, styles = make_shop(tmp_path / "shop", count=3)
    missing = tmp_path / "missing.h5"
    out = tmp_path / "index"
    events: list[str] = []

    with pytest.raises(ModelLoadError, match="Weights file not found"):
        build_from_folder(images, styles, out, backbone="mobilenet_v2", weights=missing, events=recording(events))
    assert events == ["catalogue_loaded 3", f"loading_model {missing}"] and not out.exists()

    events.clear()
    report = build_from_folder(
        images, styles, out, backbone="mobilenet_v2", weights=missing, fallback_weights="none", batch_size=2, events=recording(events)
    )

    assert events == [
        "catalogue_loaded 3",
        f"loading_model {missing}",
        "model_fallback ModelLoadError none",
        "building",
        "started 3 0",
        "progress 2",
        "progress 1",
    ]
    assert report.count == 3 and report.refinement == "label-centroids"
    index = load_index(out)
    assert index.manifest.weights == "none"
    assert index.manifest.model.weights_fingerprint == mobilenet_random.fingerprint
