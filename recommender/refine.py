"""Label-aware refinement, learned at index-build time from the catalogue's own labels.

Plain ImageNet features confuse article types that look alike and mostly ignore colour. The
catalogue's labels are free, so the index pulls every product towards the centroid of its
article type (in CNN space) and of its colour (in colour-histogram space)::

    index item  x → l2n([x + 1.5 * C_type[type(x)],  0.1 * h(x) + 0.2 * H_colour[colour(x)]])
    query       q → l2n([q, h(q)])

Search stays a flat cosine search. Queries need no labels; products whose label is unknown keep
their own vector. ``scripts/evaluate.py --compare`` measures what it gains on held-out queries
(the README's Quality section has the figures).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import colour
from .vectors import l2_normalize

METHOD = "label-centroids"
NONE = "none"
TYPE_LABEL = "articleType"
COLOUR_LABEL = "baseColour"
PARAMS_JSON = "refine.json"
TYPE_CENTROIDS = "refine_type_centroids.npy"
COLOUR_CENTROIDS = "refine_colour_centroids.npy"
DEFAULT_WEIGHTS = {"feature": 1.0, "type_centroid": 1.5, "colour": 0.1, "colour_centroid": 0.2}


def _centroids(vectors: np.ndarray, labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Unit-length mean vector of each non-empty label, accumulated in one pass."""
    names = sorted({label for label in labels if label})
    position = {name: i for i, name in enumerate(names)}
    sums = np.zeros((len(names), vectors.shape[1]), dtype=np.float64)
    for row, label in enumerate(labels):
        if label:
            sums[position[label]] += vectors[row]
    return names, l2_normalize(sums.astype(np.float32))


def _centroid_of_each(own: np.ndarray, labels: Sequence[str], names: Sequence[str], centroids: np.ndarray) -> np.ndarray:
    """Row i: the centroid of label i, or row i of ``own`` when that label was not learned."""
    position = {name: i for i, name in enumerate(names)}
    out = np.array(own, dtype=np.float32, copy=True)
    for row, label in enumerate(labels):
        if label in position:
            out[row] = centroids[position[label]]
    return out


@dataclass
class LabelCentroids:
    """Fitted refinement: class centroids plus the weights that combine them."""

    type_names: list[str] = field(default_factory=list)
    type_centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    colour_names: list[str] = field(default_factory=list)
    colour_centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, colour.DIM), np.float32))
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    type_label: str = TYPE_LABEL
    colour_label: str = COLOUR_LABEL
    #: how the colour histograms were computed (recommender/colour.py); queries must match it
    colour_method: str = colour.DEFAULT_METHOD

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        colours: np.ndarray,
        labels: Sequence[Mapping[str, str]],
        weights: Mapping[str, float] | None = None,
        colour_method: str = colour.DEFAULT_METHOD,
    ) -> LabelCentroids:
        """Learn centroids from the catalogue's features, colour histograms (made by ``colour_method``) and labels."""
        type_names, type_centroids = _centroids(np.asarray(features, np.float32), [item.get(TYPE_LABEL, "") for item in labels])
        colour_names, colour_centroids = _centroids(np.asarray(colours, np.float32), [item.get(COLOUR_LABEL, "") for item in labels])
        return cls(type_names, type_centroids, colour_names, colour_centroids, dict(weights or DEFAULT_WEIGHTS), colour_method=colour_method)

    def index_vectors(self, features: np.ndarray, colours: np.ndarray, labels: Sequence[Mapping[str, str]]) -> np.ndarray:
        """Catalogue side: each product pulled towards its type and colour centroids."""
        features = l2_normalize(features)
        colours = l2_normalize(colours)
        type_part = _centroid_of_each(features, [item.get(self.type_label, "") for item in labels], self.type_names, self.type_centroids)
        colour_part = _centroid_of_each(colours, [item.get(self.colour_label, "") for item in labels], self.colour_names, self.colour_centroids)
        w = self.weights
        return l2_normalize(
            np.concatenate(
                [w["feature"] * features + w["type_centroid"] * type_part, w["colour"] * colours + w["colour_centroid"] * colour_part],
                axis=1,
            )
        )

    @staticmethod
    def query_vectors(features: np.ndarray, colours: np.ndarray) -> np.ndarray:
        """Query side: needs no labels, only the photo's features and colour histogram."""
        return l2_normalize(np.concatenate([l2_normalize(features), l2_normalize(colours)], axis=1))

    def vector_dim(self, feature_dim: int) -> int:
        """Length of a refined vector: the backbone's features, then the colour histogram."""
        return feature_dim + colour.DIM

    def describe(self) -> dict[str, Any]:
        """What the manifest records."""
        return {
            "method": METHOD,
            "type_label": self.type_label,
            "colour_label": self.colour_label,
            "weights": dict(self.weights),
            "types": len(self.type_names),
            "colours": len(self.colour_names),
            "colour_histogram": colour.describe(self.colour_method),
        }

    def save(self, directory: Path) -> None:
        """Write the centroids and their parameters into an index directory."""
        np.save(directory / TYPE_CENTROIDS, self.type_centroids.astype(np.float32), allow_pickle=False)
        np.save(directory / COLOUR_CENTROIDS, self.colour_centroids.astype(np.float32), allow_pickle=False)
        (directory / PARAMS_JSON).write_text(
            json.dumps({"type_names": self.type_names, "colour_names": self.colour_names, "weights": self.weights,
                        "type_label": self.type_label, "colour_label": self.colour_label, "colour_method": self.colour_method},
                       indent=1, ensure_ascii=False),
            encoding="utf-8",
        )

    @classmethod
    def load(cls, directory: Path) -> LabelCentroids:
        """Read what :meth:`save` wrote; ``ValueError`` when centroids and names disagree."""
        params = json.loads((directory / PARAMS_JSON).read_text(encoding="utf-8"))
        refiner = cls(
            type_names=list(params["type_names"]),
            type_centroids=np.load(directory / TYPE_CENTROIDS, allow_pickle=False),
            colour_names=list(params["colour_names"]),
            colour_centroids=np.load(directory / COLOUR_CENTROIDS, allow_pickle=False),
            weights={k: float(v) for k, v in params["weights"].items()},
            type_label=params.get("type_label", TYPE_LABEL),
            colour_label=params.get("colour_label", COLOUR_LABEL),
            colour_method=colour.checked_method(params.get("colour_method", colour.UNRECORDED_METHOD)),
        )
        if len(refiner.type_names) != len(refiner.type_centroids) or len(refiner.colour_names) != len(refiner.colour_centroids):
            raise ValueError("refinement centroids do not match their names")
        return refiner


def can_refine(columns: Sequence[str]) -> bool:
    """The refinement needs both labels in the catalogue."""
    return TYPE_LABEL in columns and COLOUR_LABEL in columns
