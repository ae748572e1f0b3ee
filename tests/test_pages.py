"""Next 5 state (``bot/pages.py``): what a button carries and which pages get one."""

from __future__ import annotations

import numpy as np
import pytest

from bot.pages import MAX_RESULTS, PAGE, NextPage, next_page


def test_a_button_keeps_a_copy_not_a_view_of_the_batch() -> None:
    batch = np.random.default_rng(0).random((16, 2048), dtype=np.float32)
    page = NextPage(batch[3], 5)
    stored = page.vector
    assert stored.base is None and stored.flags.owndata  # does not pin the batch
    assert np.array_equal(stored, batch[3])
    batch[3] = 0
    assert stored.any()
    following = next_page(page.vector, page.offset, PAGE, 98)
    assert following is not None and following.vector is page.vector  # later pages share the copy


def test_the_next_page_keeps_the_photos_pinned_and_lifted_products() -> None:
    """Every page of a photo ranks the same products first and lifts the same ones (recommender.Query)."""
    lifted = ((4, 0.12), (9, 0.03))
    page = NextPage(np.ones(4, dtype=np.float32), 0, pinned=(2,), exact=True, lifted=lifted)
    following = next_page(page.vector, page.offset, PAGE, 98, page.pinned, exact=page.exact, lifted=page.lifted)
    assert following is not None and (following.offset, following.pinned, following.exact, following.lifted) == (PAGE, (2,), True, lifted)


@pytest.mark.parametrize(
    ("offset", "shown", "catalogue_size", "expected"),
    [
        (0, PAGE, 98, 5),
        (40, PAGE, 98, 45),
        (45, PAGE, 98, None),  # MAX_RESULTS reached
        (0, PAGE, 7, 5),
        (5, 2, 7, None),  # a short page is the catalogue's end
        (0, PAGE, 5, None),  # nothing after the only page
    ],
)
def test_only_pages_with_more_to_come_get_a_button(offset: int, shown: int, catalogue_size: int, expected: int | None) -> None:
    following = next_page(np.ones(4, dtype=np.float32), offset, shown, catalogue_size)
    assert (following.offset if following else None) == expected
    assert PAGE == 5 and MAX_RESULTS == 50


def test_buttons_compare_by_identity() -> None:
    """The library may hash or compare buttons; an array field must not make that ambiguous."""
    vector = np.ones(4, dtype=np.float32)
    a, b = NextPage(vector, 5), NextPage(vector, 5)
    assert a != b and a == a and len({a, b}) == 2
    with pytest.raises(AttributeError):
        a.offset = 10  # type: ignore[misc]  # frozen on purpose: a cached button never changes
