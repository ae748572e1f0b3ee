"""Find catalogue products that look like a photo: read → embed → index → search.

The public surface is below; every error an operator or shopper can trigger derives from
:class:`LookalikeError` (``recommender/errors.py``).
"""

from .builder import BuildReport, build_index
from .catalogue import Catalogue, CatalogueItem, load_catalogue
from .errors import (
    BuildError,
    BuildLockedError,
    CatalogueError,
    CatalogueIndexError,
    ConfigError,
    FilterError,
    ImageDecodeError,
    IndexCorruptError,
    IndexNotFoundError,
    LookalikeError,
    ModelLoadError,
    ModelMismatchError,
    NotLoadedError,
)
from .extractor import BACKBONES, FeatureExtractor
from .filters import Where
from .images import load_image
from .index_store import CatalogueIndex, load_index
from .manifest import Manifest, ModelIdentity
from .recommender import Match, Query, QueryPhoto, Recommender, ShortlistQuery
from .search import ExactSearcher

__all__ = [
    "BACKBONES",
    "BuildError",
    "BuildLockedError",
    "BuildReport",
    "Catalogue",
    "CatalogueError",
    "CatalogueIndex",
    "CatalogueIndexError",
    "CatalogueItem",
    "ConfigError",
    "ExactSearcher",
    "FeatureExtractor",
    "FilterError",
    "ImageDecodeError",
    "IndexCorruptError",
    "IndexNotFoundError",
    "LookalikeError",
    "Manifest",
    "Match",
    "Query",
    "QueryPhoto",
    "ModelIdentity",
    "ModelLoadError",
    "ModelMismatchError",
    "NotLoadedError",
    "Recommender",
    "ShortlistQuery",
    "Where",
    "build_index",
    "load_catalogue",
    "load_image",
    "load_index",
]
