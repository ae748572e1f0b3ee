"""Which products a search may return: ``where={"gender": ["Women", "Unisex"], "masterCategory": ["Footwear"]}``.

A product passes when, for every column named, its value is one of that column's values: columns
combine with AND, values with OR. Values are compared without case and surrounding spaces
("women" finds "Women"): shoppers and operators type them. The search applies the filter before
ranking (a mask over the catalogue's rows), so a filter never costs recall: the answer is the
exact top k *among the products that pass*, and a filter that passes nothing gives an empty answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .errors import FilterError

#: ``{column: value or values}``, as callers write it
Where = Mapping[str, str | Sequence[str]]
#: the same, canonical and hashable: sorted columns, each with its lower-cased values
CanonicalWhere = tuple[tuple[str, frozenset[str]], ...]


def _folded(value: str) -> str:
    return value.strip().casefold()


def canonical(where: Where | None) -> CanonicalWhere:
    """``where`` as a hashable key (``()`` for no filter); a column with no values is refused."""
    if not where:
        return ()
    entries = []
    for column, values in where.items():
        listed = [values] if isinstance(values, str) else list(values)
        folded = frozenset(_folded(str(value)) for value in listed if _folded(str(value)))
        if not folded:
            raise FilterError(f"The filter on {column!r} lists no value; give at least one, e.g. {column}=VALUE.")
        entries.append((str(column), folded))
    return tuple(sorted(entries, key=lambda entry: entry[0]))


def allowed_rows(products: Sequence[Mapping[str, str]], where: CanonicalWhere, columns: Iterable[str]) -> np.ndarray:
    """Bool mask over ``products``: which pass ``where``. ``columns``: those the catalogue can filter on."""
    known = list(columns)
    for column, _ in where:
        if column not in known:
            raise FilterError(f"This catalogue has no column {column!r} to filter on; it has: {', '.join(known) or 'none'}.")
    mask = np.ones(len(products), dtype=bool)
    for column, values in where:
        mask &= np.fromiter((_folded(product.get(column) or "") in values for product in products), dtype=bool, count=len(products))
    return mask


def parse_option(text: str) -> tuple[str, list[str]]:
    """One ``--where COLUMN=VALUE[,VALUE...]`` option → ``(column, values)``."""
    column, separator, values = text.partition("=")
    listed = [value.strip() for value in values.split(",") if value.strip()]
    if not separator or not column.strip() or not listed:
        raise FilterError(f"--where {text!r}: write it as COLUMN=VALUE or COLUMN=VALUE1,VALUE2 (e.g. gender=Women,Unisex).")
    return column.strip(), listed


def describe(where: CanonicalWhere) -> str:
    """``gender=unisex,women masterCategory=footwear``: a filter as messages show it."""
    return " ".join(f"{column}={','.join(sorted(values))}" for column, values in where)
