"""recommender/filter_words.py: a shopper's caption words → the catalogue's own label values → the engine's filter.

Fast: no model, no index. Checked on a small hand-made catalogue and on the real 4k styles.csv
(skipped when ../shared is absent).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence

import pytest

from recommender.filter_words import KIND_COLUMNS, WORD_COLUMNS, FilterWords, Named, _key
from recommender.filters import allowed_rows, canonical
from tests.recommender_helpers import FASHION_DIR

COLUMNS = ["id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "productDisplayName"]


def product(pid: str, gender: str, master: str, sub: str, article: str, colour: str) -> dict[str, str]:
    return {"id": pid, "gender": gender, "masterCategory": master, "subCategory": sub, "articleType": article,
            "baseColour": colour, "productDisplayName": f"{gender} {colour} {article}"}  # fmt: skip


PRODUCTS = [
    product("0", "Women", "Apparel", "Dress", "Dresses", "Red"),
    product("1", "Women", "Apparel", "Topwear", "Tops", "Navy Blue"),
    product("2", "Men", "Apparel", "Topwear", "Tshirts", "Blue"),
    product("3", "Men", "Apparel", "Bottomwear", "Jeans", "Navy Blue"),
    product("4", "Unisex", "Footwear", "Shoes", "Sports Shoes", "Black"),
    product("5", "Women", "Footwear", "Shoes", "Heels", "Red"),
    product("6", "Men", "Footwear", "Shoes", "Formal Shoes", "Black"),
    product("7", "Women", "Accessories", "Bags", "Handbags", "NA"),
    product("8", "Men", "Accessories", "Watches", "Watches", "Black"),
    product("9", "Women", "Footwear", "Sandal", "Sandals", "Red"),
]


@pytest.fixture(scope="module")
def words() -> FilterWords:
    return FilterWords(PRODUCTS, COLUMNS)


@pytest.fixture(scope="module")
def styles() -> list[dict[str, str]]:
    """The real 4k catalogue's rows (styles.csv as read by csv, in file order)."""
    path = FASHION_DIR / "styles.csv"
    if not path.exists():
        pytest.skip(f"fashion-products-4k not found at {path}")
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def real_words(styles) -> FilterWords:
    return FilterWords(styles, list(styles[0]))


def passing(products: Sequence[dict[str, str]], words: FilterWords, named: Sequence[Named]) -> list[int]:
    """Rows of ``products`` that the engine's filter for ``named`` lets through."""
    mask = allowed_rows(products, canonical(words.where(named)), list(products[0]))
    return [row for row, passes in enumerate(mask.tolist()) if passes]


# Words every catalogue with these labels reads the same way: the small one and the real one.
SHARED_CASES = [
    ("women", [("gender", "Women")]),
    ("Woman", [("gender", "Women")]),
    ("WOMEN'S", [("gender", "Women")]),
    ("men", [("gender", "Men")]),
    ("men's", [("gender", "Men")]),
    ("bag", [("subCategory", "Bags")]),
    ("BAGS", [("subCategory", "Bags")]),
    ("navy blue jeans", [("baseColour", "Navy Blue"), ("articleType", "Jeans")]),
    ("blue", [("baseColour", "Blue")]),
    ("sport shoes", [("articleType", "Sports Shoes")]),
    ("Sports-Shoe", [("articleType", "Sports Shoes")]),
    ("shoes", [("subCategory", "Shoes")]),
    ("a watch", [("subCategory", "Watches")]),  # subCategory and articleType both say "Watches": the broader one
    ("sandals", [("subCategory", "Sandal")]),
    ("red or black dress", [("baseColour", "Red"), ("baseColour", "Black"), ("subCategory", "Dress")]),
    ("dresses or tops", [("subCategory", "Dress"), ("articleType", "Tops")]),
    ("@somebot /similar women", [("gender", "Women")]),
    ("/similar@somebot", []),
    ("is this available? thanks a lot, I love it!", []),
    ("hi there, can you find me something like this for my wife", []),
    ("", []),
    ("  \n ", []),
    ("na", []),
    ("NA bag", [("subCategory", "Bags")]),
]
TSHIRT_CASES = [("t-shirt", [("articleType", "Tshirts")]), ("T shirts", [("articleType", "Tshirts")]),
                ("tshirt", [("articleType", "Tshirts")]), ("T-SHIRTS!!!", [("articleType", "Tshirts")])]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), SHARED_CASES + TSHIRT_CASES)
def test_words_name_the_small_catalogues_values(words: FilterWords, text: str, expected: list[Named]) -> None:
    assert words.match(text) == expected


@pytest.mark.parametrize(("text", "expected"), SHARED_CASES + TSHIRT_CASES)
def test_words_name_the_real_catalogues_values(real_words: FilterWords, text: str, expected: list[Named]) -> None:
    assert real_words.match(text) == expected


@pytest.mark.parametrize("text", ["womens", "mens", "Womens shoes"])
def test_possessives_written_without_an_apostrophe_still_name_the_gender(words: FilterWords, text: str) -> None:
    """Shops' "womens" / "mens" read like "women's" / "men's"."""
    found = words.match(text)
    assert found[0] == ("gender", "Women" if text.lower().startswith("women") else "Men")


@pytest.mark.parametrize("text", ["scarf", "Scarves", "scarfs"])
def test_a_scarf_finds_the_scarves(real_words: FilterWords, text: str) -> None:
    """The 4k catalogue's "Scarves" (no -s to take off: the singular is irregular)."""
    assert real_words.match(text) == [("subCategory", "Scarves")]


def test_men_is_not_found_inside_women_nor_in_a_catalogue_without_men() -> None:
    only_women = FilterWords([product("1", "Women", "Apparel", "Dress", "Dresses", "Red")], COLUMNS)
    assert only_women.match("men") == [] and only_women.match("for men") == []
    assert only_women.match("women") == [("gender", "Women")]
    both = FilterWords(PRODUCTS, COLUMNS)
    assert both.match("women") == [("gender", "Women")] and both.match("men") == [("gender", "Men")]
    assert both.match("men women") == [("gender", "Men"), ("gender", "Women")]


def test_longest_phrase_first_each_value_once_in_the_texts_order(words: FilterWords) -> None:
    assert words.match("blue navy blue") == [("baseColour", "Blue"), ("baseColour", "Navy Blue")]
    assert words.match("red dress, RED!") == [("baseColour", "Red"), ("subCategory", "Dress")]
    assert words.match("heels women") == [("articleType", "Heels"), ("gender", "Women")]


def test_empty_values_never_match_and_are_not_listed() -> None:
    products = [
        {"id": "1", "gender": "NA", "baseColour": "N/A", "articleType": "none"},
        {"id": "2", "gender": " na ", "baseColour": "Unknown", "articleType": "null"},
        {"id": "3", "gender": "", "baseColour": "x", "articleType": "Caps"},
    ]
    words = FilterWords(products, ["id", "gender", "baseColour", "articleType"])
    assert len(words) == 1  # "Caps" only: the empty labels and the one-letter "x" are left out
    for text in ("na", "NA", "n/a", "none", "unknown", "null", "x"):
        assert words.match(text) == [], text
    assert words.match("na caps") == [("articleType", "Caps")]


def test_a_values_most_frequent_spelling_is_the_one_named() -> None:
    products = [{"gender": "Women"}, {"gender": "women "}, {"gender": "Women"}, {"gender": "WOMEN"}]
    assert FilterWords(products, ["gender"]).match("woman") == [("gender", "Women")]


def test_kinds_combine_with_or_gender_and_colour_with_and(words: FilterWords) -> None:
    def named(text: str) -> list[int]:
        return passing(PRODUCTS, words, words.match(text))

    assert words.kind_column == "articleType"
    assert words.where(words.match("dresses or tops")) == {"articleType": ["Dresses", "Tops"]}
    assert named("dresses or tops") == [0, 1]
    # "shoes" is a subCategory: every article type under it, and nothing else (not the sandals)
    assert words.where(words.match("shoes")) == {"articleType": ["Formal Shoes", "Heels", "Sports Shoes"]}
    assert named("shoes") == [4, 5, 6]
    assert named("footwear") == [4, 5, 6, 9]
    assert named("shoes or sandals") == [4, 5, 6, 9]
    assert named("women") == [0, 1, 5, 7, 9]
    assert named("women shoes") == [5]
    assert named("red") == [0, 5, 9]
    assert named("red or navy blue") == [0, 1, 3, 5, 9]
    assert named("women red or navy blue shoes or tops") == [1, 5]
    assert named("men or women watches") == [8]
    assert named("unisex handbags") == []
    where = words.where(words.match("women red or black shoes"))
    assert where == {"gender": ["Women"], "baseColour": ["Red", "Black"], "articleType": ["Formal Shoes", "Heels", "Sports Shoes"]}


def test_where_lists_each_value_once_and_a_kind_the_catalogue_lacks_passes_nothing(words: FilterWords) -> None:
    twice = [("subCategory", "Shoes"), ("articleType", "Heels"), ("gender", "Men"), ("gender", "Men")]
    assert words.where(twice) == {"articleType": ["Formal Shoes", "Heels", "Sports Shoes"], "gender": ["Men"]}
    assert words.where([]) == {}
    # a button's kind from before a catalogue change: named as it is, it passes nothing
    assert words.where([("articleType", "Kaftans")]) == {"articleType": ["Kaftans"]}
    assert passing(PRODUCTS, words, [("articleType", "Kaftans")]) == []


def test_a_catalogue_without_label_columns_names_nothing() -> None:
    products = [{"id": "1", "productDisplayName": "Women Red Dress"}, {"id": "2", "productDisplayName": "Men Shoes"}]
    words = FilterWords(products, ["id", "productDisplayName"])
    assert words.kind_column is None and len(words) == 0
    assert words.match("women red dress") == [] and words.match("men shoes") == []
    assert words.where([]) == {}


def test_the_finest_category_column_present_holds_the_kinds() -> None:
    genders_only = FilterWords([{"gender": "Women"}, {"gender": "Men"}], ["gender"])
    assert genders_only.kind_column is None
    assert genders_only.where(genders_only.match("women")) == {"gender": ["Women"]}
    two_levels = [{"masterCategory": "Footwear", "subCategory": "Shoes"}, {"masterCategory": "Footwear", "subCategory": "Sandal"},
                  {"masterCategory": "Apparel", "subCategory": "Topwear"}]  # fmt: skip
    words = FilterWords(two_levels, ["masterCategory", "subCategory"])
    assert words.kind_column == "subCategory"
    assert words.where(words.match("footwear")) == {"subCategory": ["Sandal", "Shoes"]}
    assert words.where(words.match("topwear or shoes")) == {"subCategory": ["Topwear", "Shoes"]}


# ------------------------------------------------------------------------------ the real catalogue
def test_shoes_pass_every_product_whose_subcategory_is_shoes_and_no_other(styles, real_words: FilterWords) -> None:
    assert real_words.match("shoes") == [("subCategory", "Shoes")]
    shoes = [row for row, style in enumerate(styles) if style["subCategory"] == "Shoes"]
    assert len(shoes) > 100
    assert passing(styles, real_words, real_words.match("shoes")) == shoes
    listed = real_words.where(real_words.match("shoes"))["articleType"]
    assert {"Casual Shoes", "Sports Shoes", "Formal Shoes", "Heels", "Flats"} <= set(listed)
    assert listed == sorted({styles[row]["articleType"] for row in shoes})


def test_every_category_value_passes_its_products_and_those_of_their_article_types(styles, real_words: FilterWords) -> None:
    """A kind becomes the article types found under it: all its products pass, and any other product
    passes only for sharing one of those article types (the 4k catalogue files a few Dresses under Topwear)."""
    for column in KIND_COLUMNS:
        for value in sorted({style[column] for style in styles}):
            articles = {style["articleType"] for style in styles if style[column] == value}
            expected = [row for row, style in enumerate(styles) if style["articleType"] in articles]
            got = passing(styles, real_words, [(column, value)])
            assert got == expected, (column, value)
            assert {row for row, style in enumerate(styles) if style[column] == value} <= set(got)


def test_every_label_value_written_out_names_itself(styles, real_words: FilterWords) -> None:
    """A shopper typing a label as the catalogue writes it gets that label, or the same words in a broader
    column ("Watches" the subCategory, not the articleType); "NA" alone names nothing."""
    for column in WORD_COLUMNS:
        for value in sorted({style[column].strip() for style in styles}):
            found = real_words.match(value)
            if value.casefold() in ("na", ""):
                assert found == [], (column, value)
                continue
            assert len(found) == 1, (column, value, found)
            (named_column, named_value) = found[0]
            assert _key(named_value) == _key(value)
            assert WORD_COLUMNS.index(named_column) <= WORD_COLUMNS.index(column)
            assert passing(styles, real_words, found), (column, value)  # never names a value nobody has


def test_gender_and_colour_combine_with_and_on_the_real_catalogue(styles, real_words: FilterWords) -> None:
    named = real_words.match("women red or black shoes")
    assert named == [("gender", "Women"), ("baseColour", "Red"), ("baseColour", "Black"), ("subCategory", "Shoes")]
    expected = [row for row, style in enumerate(styles)
                if style["gender"] == "Women" and style["baseColour"] in ("Red", "Black") and style["subCategory"] == "Shoes"]  # fmt: skip
    assert expected and passing(styles, real_words, named) == expected
    tops = real_words.match("dresses or tops")
    either = [row for row, style in enumerate(styles) if style["articleType"] in ("Dresses", "Tops", "Jumpsuit")]
    assert passing(styles, real_words, tops) == either
