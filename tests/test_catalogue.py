"""Reading an operator's catalogue: Kaggle layout, plain folders, and the mistakes to report."""

from __future__ import annotations

import pytest

from recommender import CatalogueError, build_index, load_catalogue, load_index
from recommender.catalogue import find_catalogue
from tests.recommender_helpers import make_broken_catalogue, write_images


def test_kaggle_layout(demo_catalogue):
    assert len(demo_catalogue) == 98
    assert demo_catalogue.columns[0] == "id" and "productDisplayName" in demo_catalogue.columns
    item = demo_catalogue.items[0]
    assert (item.id, item.image) == ("1001", "1001.jpg")
    assert item.labels["articleType"] == "Tshirts"
    assert [i.id for i in demo_catalogue.items] == sorted((i.id for i in demo_catalogue.items), key=int)


def test_numeric_ids_sort_numerically_and_subfolders_are_scanned(tmp_path, demo_photo):
    write_images(tmp_path / "images", ["10.jpg", "9.jpg", "b.png"], demo_photo)
    write_images(tmp_path / "images" / "more", ["100.JPG"], demo_photo)
    write_images(tmp_path / "images" / ".thumbs", ["5.jpg"], demo_photo)
    (tmp_path / "images" / "readme.txt").write_text("x")
    catalogue = load_catalogue(tmp_path / "images")
    assert [(i.id, i.image) for i in catalogue.items] == [("9", "9.jpg"), ("10", "10.jpg"), ("100", "more/100.JPG"), ("b", "b.png")]


def test_extra_unquoted_commas_stay_in_the_product_name(tmp_path, demo_photo):
    write_images(tmp_path / "images", ["1.jpg", "2.jpg"], demo_photo)
    styles = tmp_path / "styles.csv"
    styles.write_text(
        "id,gender,articleType,productDisplayName\n"
        "1,Men,Tshirts,Puma Men, Red, Jersey\n"
        '2,Women,Tops,"Quoted, name"\n',
        encoding="utf-8",
    )
    catalogue = load_catalogue(tmp_path / "images", styles)
    assert catalogue.items[0].labels == {"id": "1", "gender": "Men", "articleType": "Tshirts", "productDisplayName": "Puma Men, Red, Jersey"}
    assert catalogue.items[1].labels["productDisplayName"] == "Quoted, name"


def test_the_real_catalogue_lines_up(fashion_catalogue):
    assert len(fashion_catalogue) == 4000
    assert not fashion_catalogue.missing_images and not fashion_catalogue.unlabelled
    assert all(item.image == f"{item.id}.jpg" for item in fashion_catalogue.items)
    assert all(item.labels["productDisplayName"] and item.labels["articleType"] for item in fashion_catalogue.items)


def test_styles_mismatches_are_reported_not_fatal(tmp_path, demo_photo):
    write_images(tmp_path / "images", ["1.jpg", "2.jpg"], demo_photo)
    styles = tmp_path / "styles.csv"
    styles.write_text("id,productDisplayName\n1,One\n3,Three\n", encoding="utf-8")
    catalogue = load_catalogue(tmp_path / "images", styles)
    assert [i.id for i in catalogue.items] == ["1", "2"]
    assert catalogue.missing_images == ["3"] and catalogue.unlabelled == ["2"]
    assert catalogue.items[1].labels == {"id": "2"}


def test_plain_folder_without_styles_builds_an_index(tmp_path, demo_catalogue, resnet_random):
    images = tmp_path / "photos"
    for item in demo_catalogue.items[:4]:
        write_images(images, [f"sku-{item.id}.jpg"], demo_catalogue.images_dir / item.image)
    catalogue = load_catalogue(images)
    assert catalogue.columns == ["id"] and catalogue.styles_path is None
    assert [i.id for i in catalogue.items] == [f"sku-{item.id}" for item in demo_catalogue.items[:4]]
    build_index(catalogue, tmp_path / "index", resnet_random)
    index = load_index(tmp_path / "index")
    assert index.columns == ["id", "image"]
    assert index.products[0] == {"id": "sku-1001", "image": "sku-1001.jpg"}
    assert index.manifest.catalogue.styles_csv is None


@pytest.mark.parametrize(
    "setup, message",
    [
        ("empty-folder", "No images in"),
        ("missing-folder", "Images folder not found"),
        ("no-id-column", "has no 'id' column (found: sku, name)"),
        ("duplicate-file-id", "Duplicate product id '1'"),
        ("duplicate-row", "duplicate id '1'"),
        ("missing-styles", "styles.csv not found"),
        ("not-utf8", "is not UTF-8 text"),
        ("repeated-column", "repeats a column name"),
    ],
)
def test_catalogue_mistakes_raise_catalogue_error(tmp_path, demo_photo, setup, message):
    images, styles = make_broken_catalogue(tmp_path, demo_photo, setup)
    with pytest.raises(CatalogueError) as exc_info:
        load_catalogue(images, styles)
    assert message in str(exc_info.value)


def test_a_catalogue_folder_is_found_in_either_layout(tmp_path, demo_photo):
    kaggle = tmp_path / "kaggle"
    write_images(kaggle / "images", ["1.jpg"], demo_photo)
    assert find_catalogue(kaggle) == (kaggle / "images", None)
    (kaggle / "styles.csv").write_text("id\n1\n", encoding="utf-8")
    assert find_catalogue(kaggle) == (kaggle / "images", kaggle / "styles.csv")

    plain = tmp_path / "plain"
    write_images(plain, ["a.PNG"], demo_photo)
    assert find_catalogue(plain) == (plain, None)

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no photos")
    assert find_catalogue(tmp_path / "notes") is None
    assert find_catalogue(tmp_path / "missing") is None
