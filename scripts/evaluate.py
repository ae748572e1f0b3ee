#!/usr/bin/env python
"""Measure retrieval quality of an index against the catalogue's own labels.

    python scripts/evaluate.py --images DIR --styles CSV --index DIR [--holdout FRACTION] [--seed N]
        [--k 5] [--json FILE] [--sheet FILE.png] [--per-type-csv FILE] [--compare] [--queries catalogue|shopper]

Protocols:
  * leave-one-out (default for a plain index): every labelled product queries the index with its
    stored vector; its own row is excluded from its results.
  * held-out (--holdout 0.2): a stratified 20% per articleType queries the other 80%. Anything the
    index learned from labels is re-learned on the 80% only: the label-centroid refinement, or the
    embedding head (--head labels), re-trained with the settings the index recorded and shopper-like
    views of the 80%'s photos only; queries then go through that re-trained head. A refined or
    head index is always evaluated this way (leave-one-out would leak its labels).
  * --compare: plain backbone features vs the index's method (the head of a head index, else the
    label-centroid refinement) on the same split.

Query photos (--queries), with either protocol:
  * catalogue (default): each query is its product's stored vector, i.e. its catalogue photo.
  * shopper: each query's catalogue photo becomes a shopper-like phone photo first (background,
    placement, light, blur, JPEG: recommender/shopper_photos.py, seeded by --seed and the product
    id), then is decoded, embedded and turned into a query vector exactly as the bot does. The
    contact sheet then shows those photos as its queries.

Metrics: precision@k (share of the k results with the query's label) for articleType,
masterCategory, baseColour and gender, micro (over queries) and macro (over article types with 5+
items), and mAP@k; see recommender/evaluation/metrics.py for the exact definitions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from scripts._cli import fail, positive_int, run_cli

if TYPE_CHECKING:  # the engine is imported after argument parsing, so --help stays instant
    import numpy as np

    from recommender import Catalogue, CatalogueIndex, FeatureExtractor
    from recommender import head as head_module
    from recommender.evaluation.protocols import Evaluation, ShopperQueries

DEFAULT_HOLDOUT = 0.2
SHEET_QUERIES = 12


#: indexed products whose shopper photos measure exact-item recall (the figure issue 13 started from used 300)
EXACT_ITEMS = 300


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure how often an index's nearest products share the query's labels.")
    parser.add_argument("--images", required=True, type=Path, help="the catalogue's photo folder (Kaggle: images/)")
    parser.add_argument("--styles", required=True, type=Path, help="styles.csv with id, articleType, masterCategory, baseColour, gender")
    parser.add_argument("--index", required=True, type=Path, help="index directory built by build_index.py")
    parser.add_argument("--holdout", type=float, help="evaluate FRACTION held-out products (e.g. 0.2) instead of leave-one-out")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split and of the sheet's queries (default 0)")
    parser.add_argument("--k", type=positive_int, default=5, help="results per query (default 5)")
    parser.add_argument("--json", type=Path, help="write the metrics as JSON to FILE")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet PNG of 12 random queries and their results")
    parser.add_argument("--per-type-csv", type=Path, help="write per-articleType figures (default: <json stem>.per_type.csv)")
    parser.add_argument("--compare", action="store_true", help="also compare plain features with the index's method: its embedding head, else the label-centroid refinement")
    parser.add_argument("--queries", choices=("catalogue", "shopper"), default="catalogue",
                        help="query with the catalogue photos (default) or with shopper-like phone photos made from them")
    parser.add_argument("--exact-items", type=int, default=EXACT_ITEMS, metavar="N",
                        help=f"with --queries shopper: also make shopper photos of N indexed products and count how often the product "
                             f"itself comes first / in the top k (default {EXACT_ITEMS}; 0: skip)")
    parser.add_argument("--exact-crops", action="store_true",
                        help="the exact-item stage also searches two crops of each photo, as the bot does with EXACT_CROPS=on")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.holdout is not None and not 0.0 < args.holdout < 1.0:
        fail("--holdout must be between 0 and 1 (e.g. 0.2)")

    import numpy as np

    from recommender import head as head_module
    from recommender import load_catalogue, load_index, refine
    from recommender.backends import EXACT, open_searcher
    from recommender.evaluation import protocols, report

    started = time.perf_counter()
    catalogue = load_catalogue(args.images, args.styles, require_columns=list(report.LABELS))
    index = load_index(args.index)
    unlabelled_ids = set(catalogue.unlabelled)
    labels_by_id = {item.id: item.labels for item in catalogue.items if item.id not in unlabelled_ids}
    labels = [labels_by_id.get(product["id"], {}) for product in index.products]
    labelled_rows = np.array([row for row, product in enumerate(index.products) if product["id"] in labels_by_id], dtype=np.int64)
    if len(labelled_rows) == 0:
        fail(f"none of the {len(index)} indexed products has a row in {args.styles}: is this the index of that catalogue?")
    if len(labelled_rows) < len(index):
        print(f"note: {len(index) - len(labelled_rows)} indexed products have no {args.styles.name} row: searchable, not queries.")

    vectors = np.asarray(index.vectors, dtype=np.float32)
    features = np.asarray(index.features, dtype=np.float32)
    colours = index.colours
    refiner = index.refiner
    head = index.head
    method = head_module.METHOD if head is not None else refine.METHOD if refiner is not None else refine.NONE
    learned = "head" if head is not None else "refined"  # the method --compare sets against plain features

    holdout = args.holdout
    if holdout is None and head is not None:
        holdout = DEFAULT_HOLDOUT
        print(
            f"note: this index embeds with a head trained on every product's labels, so leave-one-out would leak the "
            f"query's own label; evaluating a held-out {holdout:.0%} instead (head re-trained on the rest)."
        )
    elif holdout is None and refiner is not None:
        holdout = DEFAULT_HOLDOUT
        print(
            f"note: this index is refined with centroids learned from every product's labels, so leave-one-out would leak the "
            f"query's own label; evaluating a held-out {holdout:.0%} instead (centroids re-learned on the rest)."
        )
    elif holdout is None and args.compare:
        holdout = DEFAULT_HOLDOUT
        print(f"note: --compare needs a held-out split (the refinement learns from labels); using --holdout {holdout}.")
    if args.compare and head is None and colours is None:
        fail(f"{args.index} stores no colour histograms (built before the refinement existed): rebuild it to use --compare.")

    k = args.k
    # the whole index is searched as the bot searches it; a held-out split re-indexes its part exactly
    served = open_searcher(index) if index.manifest.backend != EXACT else None
    if served is not None:
        print(f"Searching the whole index through its {index.manifest.backend} backend, as the bot does.")
    weights = refiner.weights if refiner is not None else None
    evaluations: dict[str, Evaluation] = {}
    split: dict[str, object] = {}
    shopper: ShopperQueries | None = None
    shopper_pool: list[Path] | None = None
    photos = [image_of(index, catalogue, row) for row in range(len(index))] if args.queries == protocols.SHOPPER_QUERIES else []
    # shopper photos and the head's training views are embedded by the index's own model, loaded once
    extractor = index_model(index) if args.queries == protocols.SHOPPER_QUERIES or head is not None else None
    if holdout is None:
        mode = "leave-one-out"
        if args.queries == protocols.SHOPPER_QUERIES:
            shopper_pool = photos
            shopper = embed_shopper_queries(extractor, photos, index, labelled_rows, shopper_pool, args.seed)
        query_vectors = None if shopper is None else shopper.features
        evaluations["index"] = protocols.leave_one_out("plain", vectors, labels, labelled_rows, k=k, query_vectors=query_vectors, searcher=served)
    else:
        mode = "held-out"
        groups = [labels[row].get(report.GROUP_LABEL, "") for row in labelled_rows]
        mask = protocols.stratified_holdout(groups, holdout, seed=args.seed)
        query_rows = labelled_rows[mask]
        searchable_rows = np.setdiff1d(np.arange(len(index)), query_rows)
        split = {"holdout": holdout, "seed": args.seed, "queries": int(len(query_rows)), "searchable": int(len(searchable_rows))}
        if args.queries == protocols.SHOPPER_QUERIES:  # backgrounds come from the searchable side only
            shopper_pool = [photos[row] for row in searchable_rows]
            shopper = embed_shopper_queries(extractor, photos, index, query_rows, shopper_pool, args.seed)
        query_colours: np.ndarray | None  # the queries' colour histograms, which a head with colours and the refinement take
        if shopper is not None:
            query_features, query_colours = shopper.features, shopper.colours
        else:
            query_features, query_colours = features[query_rows], None if colours is None else colours[query_rows]

        def plain() -> Evaluation:
            return protocols.held_out("plain", features[searchable_rows], searchable_rows, query_features, query_rows, labels, k=k)

        def refined() -> Evaluation:
            assert colours is not None
            train, test = protocols.refined_split_vectors(
                features, colours, labels, searchable_rows, query_rows, weights=weights,
                query_features=query_features, query_colours=query_colours,
            )
            return protocols.held_out("refined", train, searchable_rows, test, query_rows, labels, k=k)

        def retrained_head() -> Evaluation:
            assert head is not None
            training_rows = searchable_rows[head_module.training_rows([labels[row] for row in searchable_rows], head.settings)]
            views, view_colours = head_views(extractor, photos or [image_of(index, catalogue, row) for row in range(len(index))],
                                             index, training_rows, head.settings)
            train, test = protocols.head_split_vectors(
                features, labels, searchable_rows, query_rows, views, head.settings,
                query_features=query_features, training_rows=training_rows,
                colours=colours, view_colours=view_colours, query_colours=query_colours,
            )
            return protocols.held_out("head", train, searchable_rows, test, query_rows, labels, k=k)

        if head is not None:
            evaluations["head"] = retrained_head()
        elif refiner is not None or args.compare:
            evaluations["refined"] = refined()
        if (refiner is None and head is None) or args.compare:
            evaluations["plain"] = plain()
        evaluations["index"] = evaluations["head" if head is not None else "refined" if refiner is not None else "plain"]

    exact: protocols.ExactItems | None = None
    global_only: protocols.ExactItems | None = None
    if args.queries == protocols.SHOPPER_QUERIES and args.exact_items > 0:
        exact_rows = protocols.exact_item_rows(len(index), args.exact_items, args.seed)
        if index.local_features is not None:  # the stage's forward passes give the global figures too
            from recommender import Recommender

            print(f"Exact-item stage: {len(exact_rows)} shopper photos through {'crops and ' if args.exact_crops else ''}keypoint "
                  "verification, then again with their product taken out...", flush=True)
            shot_bytes = [protocols.shopper_query_photo(photos[row], index.products[row]["id"], args.seed, photos) for row in exact_rows]
            global_only, exact = protocols.verified_exact_items(Recommender(args.index, exact_crops=args.exact_crops).load(), shot_bytes, exact_rows, k=k)
        else:
            shots = embed_shopper_queries(extractor, photos, index, exact_rows, photos, args.seed)
            exact = protocols.exact_items(vectors, index.query_vectors(shots.features, lambda _method: shots.colours), exact_rows, k=k, searcher=served)

    primary = evaluations["index"].report
    what = f"{mode}" + (f" {holdout:g}, seed {args.seed}" if holdout is not None else "")
    if shopper is not None:
        what += f", shopper queries (seed {args.seed})"
    print(f"\nIndex {args.index}: {len(index)} products, backbone {index.manifest.model.backbone}, "
          f"weights {index.manifest.weights}, refinement {method}; protocol {what}")
    print(report.format_table(primary))
    print()
    print(report.format_weakest(primary))
    if shopper is not None:
        cost = shopper.milliseconds_per_query()
        print(f"\nShopper photos: {cost['transform']:.1f} ms per query to make, {cost['decode_and_embed']:.1f} ms to decode and embed.")
    if exact is not None:
        print(f"\nExact item ({exact.queries} shopper photos of indexed products, the whole index searched as served): "
              f"the product itself first {exact.recall_at_1:.1%}, in the top {k} {exact.recall_at_k:.1%}, MRR@{k} {exact.reciprocal_rank:.3f}")
        if global_only is not None and exact.called_exact is not None:
            right = f"{exact.called_right:.1%}" if exact.called_right is not None else "-"
            print(f"  without the exact-item stage (global search only): first {global_only.recall_at_1:.1%}, top {k} {global_only.recall_at_k:.1%}")
            print(f"  called 'Exact match': {exact.called_exact:.1%} of photos, {right} of those calls right; "
                  f"with the product taken out of the index: {exact.false_exact:.1%} (false exact matches); "
                  f"{exact.ms_per_photo:.0f} ms per photo")
        if exact.taken_out:
            shares = ", ".join(f"{label} {figures['with_stage']:.1%} ({100 * (figures['with_stage'] - figures['without_stage']):+.2f} points)"
                               for label, figures in exact.taken_out.items())
            print(f"  with the product taken out, the album's {k} share the photo's product's {shares} against the global search alone "
                  "(a shop that does not carry it; the category figures may lose at most 1 point)")
    if args.compare:
        against = "the embedding head (re-trained on the searchable side)" if head is not None else "label-centroid refinement"
        print(f"\nPlain backbone features vs {against}, same split ({split['queries']} queries, "
              f"{split['searchable']} searchable):")
        print(report.format_comparison(evaluations["plain"].report, evaluations[learned].report, learned))

    if args.json:
        output: dict[str, object] = {**primary.to_json(), "mode": mode, "query_photos": args.queries, "k": k, "refinement": method,
                                     "backbone": index.manifest.model.backbone, "weights": index.manifest.weights}
        if split:
            output["split"] = split
        if exact is not None:
            exact_json: dict[str, object] = {**exact.to_json(), "seed": args.seed}
            if global_only is not None:
                exact_json["global_only"] = global_only.to_json()
            output["exact_item"] = exact_json
        if shopper is not None:
            output["shopper"] = {"seed": args.seed, "ms_per_query": {name: round(value, 2) for name, value in shopper.milliseconds_per_query().items()}}
        if args.compare:
            output["compare"] = {  # plain vs the index's method, keyed "refined" or "head"
                "plain": evaluations["plain"].report.to_json(),
                learned: evaluations[learned].report.to_json(),
                "metrics": report.compare_reports(evaluations["plain"].report, evaluations[learned].report, learned),
            }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(output, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nMetrics written to {args.json}")
    per_type_csv = args.per_type_csv or (args.json.with_name(f"{args.json.stem}.per_type.csv") if args.json else None)
    if per_type_csv:
        per_type_csv.parent.mkdir(parents=True, exist_ok=True)
        report.write_per_type_csv(primary, per_type_csv)
        print(f"Per-articleType figures written to {per_type_csv}")
    if args.sheet:
        path = write_sheet(args.sheet, evaluations["index"], index, labels, catalogue, args.seed, what, shopper_pool=shopper_pool)
        print(f"Contact sheet written to {path}")
    print(f"({time.perf_counter() - started:.1f}s)")
    return 0


def write_sheet(
    path: Path,
    evaluation: Evaluation,
    index: CatalogueIndex,
    labels: Sequence[Mapping[str, str]],
    catalogue: Catalogue,
    seed: int,
    what: str,
    *,
    shopper_pool: Sequence[Path] | None = None,
) -> Path:
    """The contact sheet of ``SHEET_QUERIES`` random queries (fixed ``seed``) and their results.

    With ``shopper_pool`` (the backgrounds the run drew from) a query cell shows the shopper photo
    that was searched, remade from the same seed, with its catalogue photo as an inset.
    """
    import io

    import numpy as np
    from PIL import Image

    from recommender.catalogue import display_name
    from recommender.evaluation.contact_sheet import SheetCell, save_contact_sheet
    from recommender.evaluation.protocols import shopper_query_photo

    def cell(row: int, score: float | None = None, correct: bool | None = None) -> SheetCell:
        product_labels = labels[row] or index.products[row]
        photo: Path | Image.Image = image_of(index, catalogue, row)
        inset = None
        if correct is None and shopper_pool is not None:
            with Image.open(io.BytesIO(shopper_query_photo(photo, index.products[row]["id"], seed, shopper_pool))) as shot:
                photo, inset = shot.convert("RGB"), photo
        return SheetCell(photo, product_labels.get("articleType", ""), product_labels.get("baseColour", ""),
                         display_name(dict(product_labels)), score, correct, inset=inset)

    rng = np.random.default_rng(seed)
    count = min(SHEET_QUERIES, len(evaluation.query_rows))
    picks = np.sort(rng.choice(len(evaluation.query_rows), size=count, replace=False))
    rows = []
    for q in picks:
        query_row = int(evaluation.query_rows[q])
        wanted = labels[query_row].get("articleType", "")
        rows.append([cell(query_row)] + [
            cell(int(r), float(s), labels[int(r)].get("articleType", "") == wanted)
            for r, s in zip(evaluation.result_rows[q], evaluation.scores[q])
        ])
    report = evaluation.report
    header = (f"{index.directory.name} · {index.manifest.model.backbone} · {evaluation.name} · {what} · "
              f"P@{report.k} type {report.precision['articleType']['micro']:.3f} · {count} random queries")
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_contact_sheet(path, rows, header)


def image_of(index: CatalogueIndex, catalogue: Catalogue, row: int) -> Path:
    """The photo of an index row: as stored by the index, else in the catalogue's photo folder."""
    stored = index.image_path(row)
    return stored if stored.is_file() else catalogue.images_dir / index.products[row]["image"]


def embed_shopper_queries(
    extractor: FeatureExtractor | None, photos: Sequence[Path], index: CatalogueIndex, query_rows: Sequence[int] | np.ndarray, pool: Sequence[Path], seed: int
) -> ShopperQueries:
    """Shopper photos of ``query_rows``, decoded and embedded by the index's own model, as the bot does."""
    import numpy as np

    from recommender.colour import colour_histograms
    from recommender.evaluation import protocols
    from recommender.images import load_image

    assert extractor is not None
    colour_method = index.colour_method  # the one the index's stored histograms used

    def embed(shots: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        pixels = np.stack([load_image(shot, extractor.input_size) for shot in shots])  # as Recommender.decode
        return extractor.extract(pixels), colour_histograms(pixels, colour_method)

    print(f"Making and embedding {len(query_rows)} shopper photos (seed {seed})...", flush=True)
    return protocols.shopper_queries([photos[row] for row in query_rows], [index.products[row]["id"] for row in query_rows], embed,
                                     seed=seed, background_pool=pool, batch_size=extractor.batch_size)


def head_views(
    extractor: FeatureExtractor | None, photos: Sequence[Path], index: CatalogueIndex, train_rows: np.ndarray, settings: head_module.HeadSettings
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Backbone features of the head's shopper-like training views of ``train_rows`` (backgrounds from them only),
    and their colour histograms where the head takes colours (else None)."""
    from recommender import head as head_module

    assert extractor is not None
    print(f"Re-training the embedding head on {len(train_rows)} products ({settings.views} shopper-like views each)...", flush=True)
    return head_module.shopper_view_inputs([photos[row] for row in train_rows], [index.products[row]["id"] for row in train_rows],
                                           extractor, settings, batch_size=extractor.batch_size, colours=settings.colour > 0)


def index_model(index: CatalogueIndex) -> FeatureExtractor:
    """The model the index was built with, refused if its features would not match the index's."""
    from recommender.recommender import extractor_for_index

    extractor = extractor_for_index(index.manifest, directory=index.directory).load()
    index.manifest.model.check_matches(extractor.identity)
    return extractor


def cli() -> int:
    """Console entry point: operator mistakes become one ``error:`` line and exit status 2."""
    return run_cli(main)


if __name__ == "__main__":
    sys.exit(cli())
