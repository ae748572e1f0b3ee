"""Find catalogue products that look like a photo: decode → embed → index → search."""

from .builder import BuildError, BuildReport, build_index
from .catalogue import Catalogue, CatalogueError, CatalogueItem, load_catalogue
from .features import BACKBONES, FeatureExtractor, ModelLoadError
from .images import ImageDecodeError, load_image
from .index import (
    CatalogueIndex,
    CatalogueIndexError,
    IndexCorruptError,
    IndexNotFoundError,
    ModelMismatchError,
    load_index,
)
from .recommender import Match, Recommender
from .search import ExactSearcher

__all__ = [
    "BACKBONES",
    "BuildError",
    "BuildReport",
    "Catalogue",
    "CatalogueError",
    "CatalogueIndex",
    "CatalogueIndexError",
    "CatalogueItem",
    "ExactSearcher",
    "FeatureExtractor",
    "ImageDecodeError",
    "IndexCorruptError",
    "IndexNotFoundError",
    "Match",
    "ModelLoadError",
    "ModelMismatchError",
    "Recommender",
    "build_index",
    "load_catalogue",
    "load_image",
    "load_index",
]
