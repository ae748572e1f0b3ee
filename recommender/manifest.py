"""The index manifest as a typed, frozen object: what produced the vectors, and what they describe.

``manifest.json`` stays a flat JSON object (indexes written before this module load unchanged);
:meth:`Manifest.from_json` validates it once, so no other module reads manifest keys by string.
A model is identified by :class:`ModelIdentity`: two extractors with equal identities produce
interchangeable vectors, whatever their weights were loaded from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import IndexCorruptError, ModelMismatchError

FORMAT_VERSION = 1
#: ``refinement.method`` of an index whose vectors are the plain backbone features.
NO_REFINEMENT = "none"
#: :attr:`ModelIdentity.runtime` of Keras/TensorFlow vectors (every index built before runtimes existed)
TENSORFLOW_RUNTIME = "tensorflow"
#: :attr:`Manifest.backend` of an index searched by scanning every vector (every index built before backends existed)
EXACT_BACKEND = "exact"
#: :attr:`Manifest.backend` of an index with an approximate (faiss) search index (recommender/ann_search.py)
ANN_BACKEND = "ann"
#: :attr:`Manifest.backend` of an index whose vectors live in a Milvus collection (recommender/milvus_search.py)
MILVUS_BACKEND = "milvus"


@dataclass(frozen=True)
class ModelIdentity:
    """What makes two extractors' vectors comparable (the weights' source is not part of it)."""

    backbone: str
    weights_fingerprint: str
    input_size: int
    pooling: str
    #: length of one backbone feature vector (``dim`` in manifest.json)
    feature_dim: int
    #: what ran the model: ``tensorflow``, ``onnx-fp32`` or ``onnx-int8`` (int8 vectors differ from fp32 ones)
    runtime: str = TENSORFLOW_RUNTIME

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "backbone": self.backbone,
            "weights_fingerprint": self.weights_fingerprint,
            "input_size": self.input_size,
            "pooling": self.pooling,
            "dim": self.feature_dim,
        }
        if self.runtime != TENSORFLOW_RUNTIME:  # manifests and checkpoints from before runtimes stay byte-identical
            data["runtime"] = self.runtime
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelIdentity:
        return cls(
            backbone=str(data["backbone"]),
            weights_fingerprint=str(data["weights_fingerprint"]),
            input_size=int(data["input_size"]),
            pooling=str(data["pooling"]),
            feature_dim=int(data["dim"]),
            runtime=str(data.get("runtime", TENSORFLOW_RUNTIME)),
        )

    def check_matches(self, requested: ModelIdentity) -> None:
        """Refuse a ``requested`` model whose vectors would not be comparable with this index's."""
        ours, theirs = {**self.to_json(), "runtime": self.runtime}, {**requested.to_json(), "runtime": requested.runtime}
        different = [key for key in ours if ours[key] != theirs[key]]
        if different:
            details = "; ".join(f"{key}: index={ours[key]!r}, requested={theirs[key]!r}" for key in different)
            raise ModelMismatchError(
                "The requested model does not match the one this index was built with "
                f"({details}). Query with the index's own model (the default) or rebuild the index."
            )


@dataclass(frozen=True)
class CatalogueSummary:
    """Where the products came from and what did not make it into the index."""

    styles_csv: str | None = None
    columns: tuple[str, ...] = ()
    skipped: int = 0
    missing_images: int = 0
    unlabelled: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "styles_csv": self.styles_csv,
            "columns": list(self.columns),
            "skipped": self.skipped,
            "missing_images": self.missing_images,
            "unlabelled": self.unlabelled,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CatalogueSummary:
        return cls(
            styles_csv=data.get("styles_csv"),
            columns=tuple(data.get("columns") or ()),
            skipped=int(data.get("skipped", 0)),
            missing_images=int(data.get("missing_images", 0)),
            unlabelled=int(data.get("unlabelled", 0)),
        )


@dataclass(frozen=True)
class Manifest:
    """Everything ``manifest.json`` records about one index."""

    model: ModelIdentity
    #: where the weights were loaded from: ``imagenet``, ``none`` or an absolute file path
    weights: str
    count: int
    #: length of a stored search vector (the feature length, plus the colour part when refined)
    vector_dim: int
    #: absolute folder the ``image`` paths of products.csv are relative to
    images_root: str
    created_at: str
    updated_at: str | None = None
    #: the refinement's own description; ``{"method": "none"}`` for plain backbone vectors
    refinement: Mapping[str, Any] = field(default_factory=lambda: {"method": NO_REFINEMENT})
    catalogue: CatalogueSummary = field(default_factory=CatalogueSummary)
    #: how the model runs: ``{"name": "tensorflow"}``, or the ONNX model file, its SHA-256, precision
    #: and (int8) the fidelity check against fp32 that let it in
    runtime: Mapping[str, Any] = field(default_factory=lambda: {"name": TENSORFLOW_RUNTIME})
    #: the products' stored local features for exact-item search (recommender/local_features.py), empty without
    local_features: Mapping[str, Any] = field(default_factory=dict)
    #: the search backend the index was built for (recommender/backends.py): empty for the exact search,
    #: else ``{"backend": "ann", ...}`` with its files and parameters
    search: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def refinement_method(self) -> str:
        return str(self.refinement.get("method", NO_REFINEMENT))

    @property
    def backend(self) -> str:
        """``exact`` (every index built before backends existed) or ``ann``."""
        return str(self.search.get("backend", EXACT_BACKEND))

    @property
    def backbone(self) -> str:
        return self.model.backbone

    def updated(self, **changes: Any) -> Manifest:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format_version": self.format_version,
            **self.model.to_json(),
            "weights": self.weights,
            "count": self.count,
            "images_root": self.images_root,
            "created_at": self.created_at,
            "catalogue": self.catalogue.to_json(),
            "refinement": dict(self.refinement),
            "vector_dim": self.vector_dim,
        }
        if self.runtime.get("name", TENSORFLOW_RUNTIME) != TENSORFLOW_RUNTIME:
            data["runtime_details"] = dict(self.runtime)
        if self.local_features:
            data["local_features"] = dict(self.local_features)
        if self.search:
            data["search"] = dict(self.search)
        if self.updated_at is not None:
            data["updated_at"] = self.updated_at
        return data

    @classmethod
    def from_json(cls, data: Any, source: Path) -> Manifest:
        """Validate a parsed ``manifest.json``; :class:`IndexCorruptError` names what is wrong."""
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            version = data.get("format_version") if isinstance(data, dict) else "?"
            raise IndexCorruptError(
                f"{source} has format version {version}; this program reads version {FORMAT_VERSION}. Rebuild the index."
            )
        required = ("backbone", "weights_fingerprint", "input_size", "pooling", "dim", "weights", "count")
        missing = [key for key in required if key not in data]
        if missing:
            raise IndexCorruptError(f"{source} lacks {', '.join(sorted(missing))}. Rebuild the index.")
        images_root = data.get("images_root")
        try:
            model = ModelIdentity.from_json(data)
            return cls(
                model=model,
                weights=str(data["weights"]),
                count=int(data["count"]),
                vector_dim=int(data.get("vector_dim", model.feature_dim)),
                images_root=images_root if isinstance(images_root, str) else "",
                created_at=str(data.get("created_at", "")),
                updated_at=data.get("updated_at"),
                refinement=dict(data.get("refinement") or {"method": NO_REFINEMENT}),
                catalogue=CatalogueSummary.from_json(data.get("catalogue") or {}),
                runtime=dict(data.get("runtime_details") or {"name": TENSORFLOW_RUNTIME}),
                local_features=dict(data.get("local_features") or {}),
                search=dict(data.get("search") or {}),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise IndexCorruptError(f"{source} holds a malformed value ({exc}). Rebuild the index.") from exc
