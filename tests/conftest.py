"""Shared pytest fixtures.

Recommender engine: every model and index below is session-scoped and built once; tests must not
modify them (copy an index to ``tmp_path`` first). Real data comes from ../shared, located as
``Path(__file__).resolve().parents[1].parent / "shared"``; fixtures that need it skip when absent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.recommender_helpers import FASHION_DIR, MOBILENET_WEIGHTS, SHARED
from tests.served_bot import serve  # noqa: F401  (a fixture: the bot in the test's event loop)

if TYPE_CHECKING:  # the engine (numpy, scikit-learn, TensorFlow) is imported only by tests that use it
    from recommender import BuildReport, Catalogue, CatalogueIndex, Recommender

# ---------------------------------------------------------------------------------------------
# Recommender engine
# ---------------------------------------------------------------------------------------------

#: Size of the real-photo index: every 6th product of the 4k catalogue, so all categories appear.
FASHION_SUBSET_SIZE = 600


@dataclass(frozen=True)
class BuiltIndex:
    """An index built by a fixture: where it is, what was indexed and the builder's report."""

    path: Path
    catalogue: Catalogue
    report: BuildReport

    def load(self) -> CatalogueIndex:
        from recommender import load_index

        return load_index(self.path)

    def recommender(self) -> Recommender:
        """A loaded Recommender over this index (it builds the index's own model, as the bot does)."""
        from recommender import Recommender

        return Recommender(self.path).load()


#: Fixtures that read ../shared; tests using them get the ``shared`` marker (``-m "not shared"``).
SHARED_FIXTURES = frozenset(
    {"mobilenet_real", "fashion_catalogue", "fashion_subset", "fashion_index", "fashion_index_refined",
     "fashion_recommender", "fashion_recommender_refined", "fashion_index_4k"}
)  # fmt: skip


@pytest.fixture(autouse=True)
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the bot's code as its ``main()`` does: python-telegram-bot durations as timedeltas."""
    monkeypatch.setenv("PTB_TIMEDELTA", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SHARED_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared)


def _require(path: Path, what: str) -> None:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (needs the shared data folder {SHARED})")


@pytest.fixture(scope="session")
def resnet_random():
    """ResNet50 with reproducible random weights (``--weights none``), loaded once."""
    from recommender import FeatureExtractor

    return FeatureExtractor("resnet50", "none").load()


@pytest.fixture(scope="session")
def mobilenet_random():
    """MobileNetV2 with seeded random weights: what ``--backbone mobilenet_v2 --weights none`` loads."""
    from recommender import FeatureExtractor

    return FeatureExtractor("mobilenet_v2", "none").load()


@pytest.fixture(scope="session")
def mobilenet_real():
    """MobileNetV2 with the real ImageNet weights from ../shared, loaded once."""
    _require(MOBILENET_WEIGHTS, "MobileNetV2 ImageNet weights")
    from recommender import FeatureExtractor

    return FeatureExtractor("mobilenet_v2", MOBILENET_WEIGHTS).load()


@pytest.fixture(scope="session")
def demo_catalogue(tmp_path_factory):
    """The Pillow demo catalogue (98 products, 7 article types x 7 colours x 2), with styles.csv."""
    from recommender import load_catalogue
    from recommender.demo import make_demo_catalogue

    images_dir, styles = make_demo_catalogue(tmp_path_factory.mktemp("demo-catalogue"))
    return load_catalogue(images_dir, styles)


@pytest.fixture
def demo_photo(demo_catalogue) -> Path:
    """One demo catalogue photo on disk (read-only)."""
    return demo_catalogue.images_dir / demo_catalogue.items[0].image


def _plain_index(catalogue, extractor, tmp_path_factory, name: str) -> BuiltIndex:
    """``catalogue`` indexed with ``extractor``, plain backbone features (``refine="none"``)."""
    from recommender import build_index

    path = tmp_path_factory.mktemp(name) / "index"
    return BuiltIndex(path, catalogue, build_index(catalogue, path, extractor, refine="none"))


def _refined_copy(built: BuiltIndex, extractor, tmp_path_factory, name: str) -> BuiltIndex:
    """The same index with label-aware refinement, derived without re-extracting any photo."""
    import shutil

    from recommender import build_index

    path = tmp_path_factory.mktemp(name) / "index"
    shutil.copytree(built.path, path)
    report = build_index(built.catalogue, path, extractor, update=True, refine="label-centroids")
    assert report.extracted == 0 and report.reused == len(built.catalogue)
    return BuiltIndex(path, built.catalogue, report)


@pytest.fixture(scope="session")
def demo_index(demo_catalogue, resnet_random, tmp_path_factory) -> BuiltIndex:
    """The demo catalogue indexed with ``resnet_random``, plain backbone features (``refine="none"``).

    Read-only: copy before changing it.
    """
    return _plain_index(demo_catalogue, resnet_random, tmp_path_factory, "demo-index")


@pytest.fixture(scope="session")
def demo_index_refined(demo_index, resnet_random, tmp_path_factory) -> BuiltIndex:
    """``demo_index`` with label-aware refinement: what ``--refine auto`` gives this catalogue."""
    return _refined_copy(demo_index, resnet_random, tmp_path_factory, "demo-index-refined")


@pytest.fixture(scope="session")
def demo_recommender(demo_index):
    """A loaded Recommender over ``demo_index`` (it builds its own ResNet50, as the bot does)."""
    return demo_index.recommender()


@pytest.fixture(scope="session")
def fashion_catalogue():
    """The real 4,000-product catalogue in ../shared (read in place)."""
    _require(FASHION_DIR / "styles.csv", "fashion-products-4k")
    from recommender import load_catalogue

    return load_catalogue(FASHION_DIR / "images", FASHION_DIR / "styles.csv")


@pytest.fixture(scope="session")
def fashion_subset(fashion_catalogue):
    """600 real products spread over the catalogue; images stay in ../shared (nothing copied)."""
    step = len(fashion_catalogue.items) // FASHION_SUBSET_SIZE
    items = fashion_catalogue.items[::step][:FASHION_SUBSET_SIZE]
    return dataclasses.replace(fashion_catalogue, items=items, missing_images=[], unlabelled=[])


@pytest.fixture(scope="session")
def fashion_index(fashion_subset, mobilenet_real, tmp_path_factory) -> BuiltIndex:
    """``fashion_subset`` indexed with the real MobileNetV2, plain backbone features.

    Read-only: copy before changing it.
    """
    return _plain_index(fashion_subset, mobilenet_real, tmp_path_factory, "fashion-index")


@pytest.fixture(scope="session")
def fashion_index_4k(fashion_catalogue, mobilenet_real, tmp_path_factory) -> Path:
    """All 4,000 real products, plain MobileNetV2 vectors, exact search, no keypoints: the base the
    search-backend tests derive their ann and milvus indexes from with ``--update`` (no photo extracted
    again). About 20-50 s on 2 cores. Read-only: copy before changing it."""
    from recommender import build_index

    path = tmp_path_factory.mktemp("fashion-index-4k") / "index"
    # ONNX fp32: as fast to extract as int8 here, without int8's calibration and fidelity check (about 30 s)
    build_index(fashion_catalogue, path, mobilenet_real, batch_size=64, refine="none", head="none", exact_items=False, runtime="onnx", precision="fp32")
    return path


@pytest.fixture(scope="session")
def fashion_index_refined(fashion_index, mobilenet_real, tmp_path_factory) -> BuiltIndex:
    """``fashion_index`` with label-aware refinement (the default for a labelled catalogue)."""
    return _refined_copy(fashion_index, mobilenet_real, tmp_path_factory, "fashion-index-refined")


@pytest.fixture(scope="session")
def fashion_recommender(fashion_index):
    """A loaded Recommender over ``fashion_index``."""
    return fashion_index.recommender()


@pytest.fixture(scope="session")
def fashion_recommender_refined(fashion_index_refined):
    """A loaded Recommender over ``fashion_index_refined``."""
    return fashion_index_refined.recommender()
