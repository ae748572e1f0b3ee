"""Shoppers' words → a catalogue filter: "women", "red dress", "casual shoes" in a photo's caption.

Words are matched against the catalogue's own label values, not a fixed list, so they work for any
catalogue with these columns and never name a value it lacks. Matching ignores case, spacing and
punctuation ("t-shirt" finds "Tshirts") and tolerates plurals ("bag" finds "Bags", "woman" finds
"Women"). Longer phrases win ("navy blue" is one colour, not "blue"); a word that several columns
hold is read as the broadest (``subCategory`` "Shoes" rather than ``articleType``), since shoppers'
words are broad. Words that match nothing are ignored: captions are chatty.

What the words name is a list of ``(column, value)`` pairs; :meth:`FilterWords.where` turns it into
the engine's filter. Kinds of product ("dress", "tops", "shoes", at any of the three category
levels) combine with OR, as a shopper means "dresses or tops": they become one ``articleType``
list. Gender and colour combine with AND with the kind, and their own values with OR.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

#: Columns a shopper's words may filter, broadest first within the garment's kind.
WORD_COLUMNS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour")
#: The category levels, broadest first: words naming any of them combine with OR.
KIND_COLUMNS = ("masterCategory", "subCategory", "articleType")
#: A named (column, value): what a word, or a filter button, asks for.
Named = tuple[str, str]
#: Values that say nothing (missing labels in the Kaggle catalogue): never matched, never a button.
EMPTY_VALUES = frozenset({"", "na", "n/a", "none", "null", "unknown"})
#: Plurals a trailing -s does not explain.
_IRREGULAR = {"women": "woman", "men": "man", "children": "child", "feet": "foot", "scarves": "scarf"}
#: The longest phrase compared, in words ("loungewear and nightwear").
_LONGEST = 4
_TOKEN = re.compile(r"[^\W_]+")


def _singular(word: str) -> str:
    """One lower-case word's singular, as far as its ending tells ("watches" → "watch")."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us")) and len(word) > 3:
        return _IRREGULAR.get(word[:-1], word[:-1])  # "womens" (women's without the apostrophe) → "woman"
    return word


def _tokens(text: str) -> list[str]:
    """Letters and digits only, lower case, each word singular: "Sports Shoes" → ["sport", "shoe"]."""
    return [_singular(token) for token in _TOKEN.findall(text.casefold())]


def _key(text: str) -> str:
    """A value as compared: its singular words run together ("T-shirts" → "tshirt", like "Tshirts")."""
    return "".join(_tokens(text))


class FilterWords:
    """The catalogue's label values by how shoppers write them; :meth:`match` reads a caption."""

    def __init__(self, products: Sequence[Mapping[str, str]], columns: Iterable[str]) -> None:
        present = [column for column in WORD_COLUMNS if column in set(columns)]
        #: phrase key → (column, value) of the broadest column holding it
        self._values: dict[str, Named] = {}
        kinds = [column for column in KIND_COLUMNS if column in present]
        #: the finest category column, and the values of it each category value covers
        self.kind_column = kinds[-1] if kinds else None
        self._covers: dict[Named, set[str]] = {}
        if self.kind_column is not None:
            for product in products:
                finest = (product.get(self.kind_column) or "").strip()
                for column in kinds:
                    self._covers.setdefault((column, (product.get(column) or "").strip()), set()).add(finest)
        #: each of these columns' values, most frequent first (gender's make the bot's filter buttons)
        self.values: dict[str, list[str]] = {}
        for column in present:
            counts = Counter((product.get(column) or "").strip() for product in products)
            self.values[column] = [value for value, _ in counts.most_common() if value.casefold() not in EMPTY_VALUES]
            for value in self.values[column]:
                key = _key(value)
                if len(key) >= 2:
                    self._values.setdefault(key, (column, value))

    def __len__(self) -> int:
        return len(self._values)

    def where(self, named: Iterable[Named]) -> dict[str, list[str]]:
        """The engine's filter (:mod:`recommender.filters`) for the named values: kinds as one list of
        the finest category's values, the other columns as named."""
        where: dict[str, list[str]] = {}
        for column, value in named:
            if column in KIND_COLUMNS and self.kind_column is not None:
                # A value this catalogue lacks covers nothing: named as it is, it passes nothing.
                covered = self._covers.get((column, value)) or {value}
                listed = where.setdefault(self.kind_column, [])
                listed.extend(sorted(covered - set(listed)))
            elif value not in where.setdefault(column, []):
                where[column].append(value)
        return where

    def match(self, text: str) -> list[Named]:
        """The ``(column, value)`` pairs ``text``'s words name, in the text's order (``[]`` for none),
        longest phrases first: "women red or black dress" → gender Women, baseColour Red, baseColour
        Black, subCategory Dress."""
        words = [word for word in re.split(r"\s+", text) if word and not word.startswith(("@", "/"))]
        tokens = _tokens(" ".join(words))
        found: list[Named] = []
        start = 0
        while start < len(tokens):
            for length in range(min(_LONGEST, len(tokens) - start), 0, -1):
                hit = self._values.get("".join(tokens[start : start + length]))
                if hit is not None:
                    if hit not in found:
                        found.append(hit)
                    start += length
                    break
            else:
                start += 1
        return found
