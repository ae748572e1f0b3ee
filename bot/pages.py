"""Next 5 and filter buttons: what a button under an album carries, and which pages get a "Next 5".

The button's callback data is a :class:`NextPage` object. python-telegram-bot's arbitrary callback
data (``ApplicationBuilder().arbitrary_callback_data(MAX_BUTTONS)``) keeps it in a bounded cache
and gives Telegram only an opaque key, so the next page needs no second download or embedding of
the shopper's photo. A press whose key is no longer cached (the oldest buttons are forgotten first,
and all of them at a restart) or was never issued (forged) reaches the bot as
``InvalidCallbackData``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recommender.filter_words import Named

#: Products per album.
PAGE = 5
#: Products a shopper can page through for one photo.
MAX_RESULTS = 50
#: "Next 5" buttons remembered, each with its photo's query vector.
MAX_BUTTONS = 5000


@dataclass(frozen=True, eq=False)  # compared by identity: a vector has no useful equality
class NextPage:
    """The page a button shows: the shopper's query vector, the rank the page starts at, and the
    products the photo's keypoints verified (they rank first on every page, recommender/exact_match.py).
    A filter button is a page at rank 0 with another filter (bot/shopper_filters.py)."""

    vector: np.ndarray
    offset: int
    pinned: tuple[int, ...] = ()
    #: the index generation that answered the photo (bot/inference.py): after a reload its rows are
    #: other products, so the button then says the search has expired
    generation: int = 1
    #: the shopper's filter: (column, value) pairs from the photo's caption words and the buttons
    named: tuple[Named, ...] = ()
    #: the article type of the first album's top match, which "Only <kind>" narrows to
    kind: str | None = None
    #: ``pinned[0]`` was verified as the very product in the photo (its caption says "Exact match")
    exact: bool = False
    #: shortlisted products that rise in the album's order (recommender.Query.lifted), on every page alike
    lifted: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        # A row of an inference batch would keep the whole batch alive while the button is cached.
        if self.vector.base is not None:
            object.__setattr__(self, "vector", self.vector.copy())


def next_page(
    vector: np.ndarray, offset: int, shown: int, catalogue_size: int, pinned: tuple[int, ...] = (), generation: int = 1,
    named: tuple[Named, ...] = (), kind: str | None = None, exact: bool = False, lifted: tuple[tuple[int, float], ...] = (),
) -> NextPage | None:
    """The page after ``shown`` products from ``offset``, or None when there is nothing more to offer
    (``catalogue_size``: the products that pass the page's filter)."""
    following = offset + shown
    if shown == PAGE and following < min(catalogue_size, MAX_RESULTS):
        return NextPage(vector, following, pinned, generation, named, kind, exact, lifted)
    return None
