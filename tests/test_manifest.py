"""The typed manifest: round trip, refusals, and model identity refusing vectors of another model."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from recommender import IndexCorruptError, Manifest, ModelIdentity, ModelMismatchError, Recommender
from recommender.manifest import CatalogueSummary

# --- model mismatch at query time -------------------------------------------------------------


def test_query_with_another_backbone_is_refused(demo_index):
    with pytest.raises(ModelMismatchError, match="built with backbone 'resnet50', not 'mobilenet_v2'"):
        Recommender(demo_index.path, backbone="mobilenet_v2").load()


def test_query_with_other_weights_is_refused(fashion_index):
    """Same backbone, different weights (random instead of ImageNet): the fingerprint differs."""
    with pytest.raises(ModelMismatchError, match="weights_fingerprint") as exc_info:
        Recommender(fashion_index.path, weights="none").load()
    assert "rebuild the index" in str(exc_info.value)


def test_query_with_the_same_weights_from_another_file_is_accepted(tmp_path, fashion_index):
    """The check is on the weights themselves, not where they were read from."""
    from tests.recommender_helpers import MOBILENET_WEIGHTS

    copy = tmp_path / "copy.weights.h5"
    shutil.copy(MOBILENET_WEIGHTS, copy)
    recommender = Recommender(fashion_index.path, weights=copy).load()
    assert recommender.extractor is not None
    assert recommender.extractor.fingerprint == fashion_index.load().manifest.model.weights_fingerprint


# --- the manifest on its own ------------------------------------------------------------------

MODEL = ModelIdentity(backbone="resnet50", weights_fingerprint="f" * 64, input_size=224, pooling="avg", feature_dim=2048)


def a_manifest(**changes) -> Manifest:
    manifest = Manifest(
        model=MODEL, weights="none", count=98, vector_dim=2368, images_root="/shop/images",
        created_at="2024-05-01T10:00:00+00:00", updated_at="2024-05-02T10:00:00+00:00",
        refinement={"method": "label-centroids", "types": 7}, catalogue=CatalogueSummary("/shop/styles.csv", ("articleType",), 2, 1, 0),
    )  # fmt: skip
    return dataclasses.replace(manifest, **changes)


@pytest.mark.parametrize("updated_at", ["2024-05-02T10:00:00+00:00", None])
def test_a_manifest_survives_a_trip_through_json(updated_at):
    manifest = a_manifest(updated_at=updated_at)
    data = json.loads(json.dumps(manifest.to_json()))

    assert Manifest.from_json(data, Path("manifest.json")) == manifest
    assert data["dim"] == 2048 and data["vector_dim"] == 2368 and data["format_version"] == 1
    assert ("updated_at" in data) == (updated_at is not None)
    assert manifest.refinement_method == "label-centroids" and manifest.backbone == "resnet50"


def test_a_manifest_without_vector_dim_or_refinement_has_plain_features():
    data = a_manifest().to_json()
    del data["vector_dim"], data["refinement"]

    manifest = Manifest.from_json(data, Path("manifest.json"))

    assert manifest.vector_dim == 2048 and manifest.refinement_method == "none"


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda data: [1, 2], "format version ?"),
        (lambda data: {**data, "format_version": 99}, "format version 99; this program reads version 1"),
        (lambda data: {k: v for k, v in data.items() if k not in ("weights_fingerprint", "count")}, "lacks count, weights_fingerprint"),
        (lambda data: {**data, "count": "many"}, "holds a malformed value"),
        (lambda data: {**data, "catalogue": {"skipped": [1]}}, "holds a malformed value"),
    ],
    ids=["not-an-object", "future-version", "missing-keys", "bad-count", "bad-summary"],
)
def test_a_malformed_manifest_is_refused_with_its_path(damage, words):
    with pytest.raises(IndexCorruptError) as exc_info:
        Manifest.from_json(damage(a_manifest().to_json()), Path("/index/manifest.json"))
    assert words in str(exc_info.value) and "/index/manifest.json" in str(exc_info.value)


def test_model_identity_refuses_a_model_whose_vectors_differ():
    MODEL.check_matches(dataclasses.replace(MODEL))  # equal identities: accepted
    with pytest.raises(ModelMismatchError) as exc_info:
        MODEL.check_matches(dataclasses.replace(MODEL, backbone="mobilenet_v2", feature_dim=1280))
    message = str(exc_info.value)
    assert "backbone: index='resnet50', requested='mobilenet_v2'" in message and "dim: index=2048, requested=1280" in message
    assert "weights_fingerprint" not in message
