"""Exact item: is one of the candidates *the very product* in the shopper's photo?

Two stages on top of the global search. Measured on shopper photos of indexed products (300 per
seed, 4k catalogue, MobileNetV2 int8 with the default head; README "Exact item"):

1. **Shortlist** (:func:`query_crops`, :func:`shortlist`). A phone photo shows the product small,
   off-centre, on a busy background; the whole-photo vector mostly describes the scene. With
   ``Recommender(exact_crops=True)`` two crops of it (the top-left and bottom-right of a 2 x 2 grid
   at 80 % of its sides) are embedded in the same forward pass as the photo, and each product scores
   its best crop; the :data:`SHORTLIST` best go on. By default the photo alone searches: the
   instance head on six views finds the product from it about as often as the two-view head did
   with crops, and the crops' forward passes cost 19-39 ms of the bot's p50 (ResNet50, 2 cores).
   With a learned head the shortlist searches the *instance head*'s embedding (recommender/head.py:
   trained on the head's shopper-like views to tell the products themselves apart), not the
   album's vectors, which the head pulls together by type and colour: the product is among the 50
   for 96 % of photos there (the photo alone, seeds 0-19; each product's vector also takes in its
   shopper-like views, head.product_vectors), against 75 % (seed 0, whole photo and crops) in the
   album's vectors.
2. **Geometric verification** (:class:`Verifier`). The shortlist's catalogue keypoints
   (recommender/local_features.py, made at build time) are matched to the photo's RootSIFT
   keypoints (Lowe's ratio test, each photo keypoint used once per candidate); a candidate's
   matches must agree on one rotation, scale and shift (OpenCV's RANSAC,
   :func:`cv2.estimateAffinePartial2D`) and in colour (SIFT sees grey levels only: the same shirt
   in red and in blue would match). The candidate with most such matches, at least
   :data:`PIN_INLIERS`, whose product lands inside the photo at a plausible size, comes first;
   none verified, the candidate first in that order (most agreeing matches, the shortlist's
   score breaking near-ties) still comes first when :data:`LIKELY_INLIERS` of its matches agree,
   failing that the shortlist's best when it leads the next by :data:`CLEAR_LEAD`, and failing
   that the first in that order when the label head believes the photo shows its own article type
   and colour (:data:`LABELS_AGREE`); the rest of the album follows in the global order, where the
   shortlist's likely candidates whose type and colour the label head believes rise (:data:`LIFT`).

The product itself first, seeds 0-19: 20.7-26.3 % with the global search alone (seeds 0-2), 51.7-63.7 %
with the first version of this stage (seeds 0-2), **87.37 %** now (83.3-92.0 % per seed); in the top 5
36.7-42.3 % → 56.7-66.7 % → **89.15 %** (85.0-93.7 %), for 36-38 ms per photo (the evaluator's whole
query, batches of 16) on these 2 cores. For photos of products the shop does not carry, whatever comes
first is wrong: the album's agreement with the photo's product stays within 1 point of the album's
without the stage (colour 0.88 points below, the other labels within 0.1).
The photo's keypoints are found at a lower contrast threshold than the catalogue's
(recommender/local_features.py, ``QUERY_CONTRAST``).

The first candidate is called an **exact match** only with :data:`EXACT_INLIERS` agreeing matches
and :data:`EXACT_MARGIN` times as many as any other candidate, and in the photo whole: 45.4 % of
the photos of seeds 0-19 were called exact, 99.9 % of those calls right; with the product taken
out of the index, 0.40 % were (falsely) called exact, 0-1.7 % per seed. The thresholds were chosen
on seed 0's photos (the prototype's figures), seeds 1 and 2 confirmed them; seeds 3-9 found the
backdrop's products called exact, hence :data:`EXACT_INSIDE`, and seeds 10-14 a seed at 3.3 %,
hence 14 matches, not 12 (15 since the photo's keypoints are found at 320 px, not 400); seeds 15-19
were the check.

Why the geometry gates: a product in the background (in the reference tests, another catalogue
photo used as the backdrop) matches as well as the one in front. A verified product must fit
inside the photo (:data:`MIN_INSIDE` of its box) at no more than :data:`MAX_SCALE` times the
catalogue photo's size: the backdrop's product, scaled up to fill the frame, fails both; an exact
match must be in the photo whole (:data:`EXACT_INSIDE`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .images import square_resize
from .local_features import LocalFeatures, LocalFeatureStore, root_sift
from .search import ExactSearcher

#: crop sides as shares of the photo's, besides the whole photo; each scale is a grid with half-crop steps
#: (a 3 x 3 grid at 0.65 as well put the product in more shortlists, 79 % against 73 % in the best 50,
#: but found it first no more often after verification: 62.0 % against 62.7 %, for 9 more forward passes)
CROP_SCALES = (0.8,)
#: of each scale's grid only the crops on its diagonal, top left to bottom right (2 of the 2 x 2 at 0.8):
#: the product among the 50 for 94.3 % of photos against 94.7 % with all four; through the whole
#: stage, first 81.6 % against 81.8 % and 83.8 % against 84.1 % in the top 5 (seeds 0-19, 6,000
#: photos; on seeds 0-9 81.37 % either way), for two images fewer in every photo's forward pass
#: (ResNet50 int8 in the bot, 44k products: p50 160 / 159 ms against 175 / 205 ms, alternated)
CROP_DIAGONAL = True
#: products verified per photo (the crops' best)
SHORTLIST = 50
#: from this many products on, the shortlist's own embedding (the instance head's few hundred values) is
#: searched through a projection on a quarter of its leading directions (recommender/projected_search.py:
#: the same top 50, exact all the same). At 44,000 products x 256 values a photo's three queries read
#: 45 MB in full, 12.5 ms on one core; through the projection 3.9-4.8 ms
SHORTLIST_PROJECT_ABOVE = 20_000
#: Lowe's ratio: a match counts when its nearest descriptor is this much closer than the second
RATIO = 0.8
#: RANSAC tolerance, pixels of the query photo scaled to QUERY_SIDE
RANSAC_PIXELS = 8.0
#: agreeing matches that put a candidate before the global order; at most this many candidates
#: (the rest of the album stays the most *similar* products: pinning every verified candidate
#: measured the same first/top-5 figures and filled albums with look-alikes of other kinds).
#: 7, :data:`LIKELY_INLIERS` 4 and :data:`CLEAR_LEAD` 0.07 (6, 2 and 0.05 before) keep the whole
#: stage within the category figures' 1 point for photos of products the shop does not carry: there
#: every product put first is a wrong one (mostly the same cut in another colour), and with 6 / 2 /
#: 0.05 the album's colour agreement with the photo's product was 1.77 points below the album's
#: without the stage (seeds 0-19, 6,000 photos), now 0.81 (chosen on seeds 0-9: 0.68, checked on
#: 10-19: 0.93). The product itself first: 85.12 % → 83.08 %, in the top 5 86.75 % → 85.05 %.
#: 6 / 3 / 0.06 since the instance head takes the photo's colours (head.HeadSettings.instance_colour): its
#: candidates are more often the product, and its wrong ones less often another colour, so the same colour
#: cost buys more (seeds 0-19 with :data:`LIFT`: first 87.50 %, top 5 89.40 %; chosen on seeds 0-9, checked on 10-19).
#: :data:`LIKELY_INLIERS` 4 again since the label head sees colours too (head.HeadSettings.colour): see there
PIN_INLIERS = 6
MAX_PINNED = 1
#: when no candidate is verified, the one first by agreeing matches (the shortlist's score breaking
#: near-ties) still comes first if this many of its matches agree in place and colour (too few to
#: verify: the rest of the album is unchanged, nothing is called exact). The shortlist's embedding
#: tells the very product apart better than the album's vectors, which gather products of a type and
#: colour. This (for the shortlist's best only) and using each photo keypoint once per candidate,
#: together: first 74.7 / 67.3 / 72.3 % → 76.3 / 68.0 / 74.3 % (seeds 0-2), false exact matches
#: 1.3 / 2.0 / 1.0 % → 0.3 / 1.0 / 1.0 %; then the candidate with most matches instead of the
#: shortlist's best: 83.0 / 76.0 / 79.3 % → 84.7 / 78.0 / 81.0 % (seeds 3-4, not used to choose:
#: 75.7 / 79.3 % → 76.3 / 80.7 %), the album's labels within 0.6 points, with the product in the
#: catalogue or taken out (seeds 0-19: colour -0.55 points for products not in the catalogue). On 1
#: match: no better (84.3 / 78.0 / 81.3 %) and up to 0.9 points of colour lost when the product is
#: not in the catalogue; on none: 85.3 / 81.3 / 83.0 %, but 1.7-2.8 points of colour lost there (the
#: shortlist's vectors know the product, not what looks like it; :data:`CLEAR_LEAD` takes the sure cases).
#: Those figures were measured with 2; it is 4 since (:data:`PIN_INLIERS`): on 2-5 matches the
#: candidate put first was the product for 78 % of the photos of carried products it fired on, but it
#: fired on 29 % of the photos of products not carried (11 % of carried ones'), where it is always wrong;
#: 3 since the instance head takes colours (:data:`PIN_INLIERS`). 4 again since the label head takes them
#: too: its album then agrees with the photo's product's colour far more often (for products not carried,
#: 50.8 % of the album against 45.0 %), so every wrong product put first costs more of it. Seeds 0-19 with
#: :data:`LIFT_LABELS` 0.3: first 87.37 %, top 5 89.18 %, colour 0.88 points below the album's without the
#: stage; with 3 (and 0.1) 87.88 %, 89.78 %, but colour 1.50 points below (0.3 alone: 1.14)
LIKELY_INLIERS = 4
#: when nothing has even LIKELY_INLIERS, the shortlist's best still comes first if its score (cosine in
#: the instance head's space) is this much above the next candidate's: SIFT finds nothing on a plain
#: garment or a blurred photo, but the instance head can still single the product out. Seeds 0-19
#: (6,000 photos): first 80.4 → 81.8 %, top 5 83.1 → 84.1 %; for photos of products not in the
#: catalogue the album's colour agreement drops 0.3 points (0.04: first 82.0 %, 0.5 points of colour;
#: chosen on seeds 0-9, confirmed on 10-14, made 0.05 on 0-19 to keep that round's colour cost under 1;
#: 0.07 since, with :data:`PIN_INLIERS`, to keep the whole stage's cost under 1 point; 0.06 with the colours)
CLEAR_LEAD = 0.06
#: when nothing else puts a candidate first, the one first by agreeing matches and score still comes
#: first if the label head (recommender/head.py) gives the candidate's own catalogue value of each of
#: these labels (those the head learned) at least this probability for the photo: the instance head and SIFT know the product's shape, the label head
#: its type and colour, and the wrong candidates are mostly the same cut in another colour. Seeds 0-19:
#: first 83.08 → 84.07 % (80 % or more on every seed: 80.0-87.7 %), top 5 85.05 → 85.63 %; for
#: products not carried the album's colour agreement 0.79 points below the album's without the stage
#: (0.81 without it). Chosen on seeds 0-9 and 10-19 among 0.1-0.3: 0.1 gave first 84.57 % but colour
#: -1.13 on seeds 10-19, 0.15 -0.99
AGREEING_LABELS = ("articleType", "baseColour")
LABELS_AGREE = 0.2
#: the rest of the album follows the global order, except that a shortlisted candidate (other than the one put
#: first) whose score in the shortlist's space is above :data:`LIFT_FROM` and whose own article type and colour
#: the label head gives at least :data:`LIFT_LABELS` each ranks as if its album score were LIFT x (score -
#: LIFT_FROM) higher (:func:`lifts`, :meth:`Recommender.answer`): the instance head knows the very product, the
#: album's vectors what looks like it, and the label check keeps a look-alike of another colour out. Seeds 0-19
#: (with the thresholds above): top 5 88.45 → 89.40 %, first 87.25 → 87.50 %; for products not carried the
#: album's colour agreement 0.35 points below the album's without the stage instead of 0.81, articleType 0.58
#: instead of 0.42. Chosen among 0.5-1.0, 0.3-0.6 and 0.05-0.2 on seeds 0-9 (top 5 88.90 %, colour +0.07,
#: articleType -0.71), checked on 10-19 (89.90 %, -0.77, -0.44); without the label check (0.5 from 0.5) the
#: top 5 was 88.70 / 89.13 %; a larger lift or a lower gate bought at most 0.3 points more for up to 1.0 of colour.
#: 0.3 since the label head takes colours (its beliefs are surer; :data:`LIKELY_INLIERS`): seeds 0-19, colour
#: 0.88 points below the album's without the stage against 0.85 with 0.2, articleType -0.08 against -0.24
LIFT = 0.5
LIFT_FROM = 0.4
LIFT_LABELS = 0.3
#: agreeing matches, and the margin over the next candidate, that make the first an exact match. 12
#: (chosen on seed 0) called 53.0 % of the photos of seeds 0-14 exact, but falsely 0.67 % with the
#: product taken out, 3.3 % on seed 13; 14: 48.4 %, falsely 0.40 %, at most 1.7 % on one seed (16: 44.6 %,
#: 0.33 %; the rest are mostly the catalogue's duplicates: one photo listed under two ids). With the
#: photo's keypoints at 320 px (local_features.QUERY_SIDE), seeds 0-19: 14 called 47.5 %, falsely 0.55 %,
#: 2.0 % on one seed; 15: 45.0 %, falsely 0.47 %, at most 1.7 % (16: 42.9 %, 0.40 %)
EXACT_INLIERS = 15
EXACT_MARGIN = 1.5
#: share of the product's box that must fall inside the photo; largest scale from catalogue photo to query
MIN_INSIDE = 0.6
MAX_SCALE = 2.5
#: share of the product's box inside the photo that an exact match needs: what the shopper points the
#: camera at is in the picture whole, while a product in the backdrop (a poster, a neighbouring
#: garment) runs off its edges. Seeds 0-9 (3,000 photos, 12 matches): false exact 1.07 % → 0.50 % (the
#: worst seed 2.3 % → 1.3 %; 8 of the 15 left are the same photo, or nearly, listed under another
#: id), calls 53.5 % → 53.0 %, right 99.2 % → 99.9 %; the true calls' 1st percentile is 0.95 inside.
#: It only withholds the caption: the product still comes first
EXACT_INSIDE = 0.9
#: largest difference of (r, g) chromaticity (summed) between a match's two keypoints that counts as the same colour
COLOUR_TOLERANCE = 0.12
#: an exact match's geometrically agreeing matches must mostly agree in colour too: the same jacket in
#: another colour still matches on its black zip and white logo, but not on the rest
COLOUR_SHARE = 0.75


def shortlist_searcher(vectors: np.ndarray) -> ExactSearcher:
    """The exact search of the shortlist's own embedding, projected when the catalogue is large (:data:`SHORTLIST_PROJECT_ABOVE`).

    Photos are verified on several threads at once: the projection's running statistics of how well
    it prunes may then miss an update, which only delays its choice of a full pass; results stay exact."""
    searcher = ExactSearcher(project_above=SHORTLIST_PROJECT_ABOVE, projected_dim=max(1, vectors.shape[1] // 4)).fit(vectors)
    searcher.prepare_projection()  # 0.07 s at 44,000 x 256
    return searcher


def crop_boxes(
    width: int, height: int, scales: Sequence[float] = CROP_SCALES, diagonal: bool = CROP_DIAGONAL
) -> list[tuple[int, int, int, int]]:
    """The crops' boxes: for each scale a grid whose neighbours overlap by half (2 x 2 at 0.8, 3 x 3 at 0.65...),
    or with ``diagonal`` only its crops from the top left to the bottom right."""
    boxes = []
    for scale in scales:
        if not 0 < scale < 1:
            raise ValueError(f"a crop scale must lie between 0 and 1 (the whole photo is always searched), not {scale}")
        crop_w, crop_h = width * scale, height * scale
        steps = math.ceil((1 - scale) / (scale * 0.5)) + 1
        for row in range(steps):
            for column in range(steps):
                if diagonal and row != column:
                    continue
                left = (width - crop_w) * column / (steps - 1)
                top = (height - crop_h) * row / (steps - 1)
                boxes.append((round(left), round(top), round(left + crop_w), round(top + crop_h)))
    return boxes


def crops_per_photo(scales: Sequence[float] = CROP_SCALES) -> int:
    """How many crops :func:`query_crops` makes of any photo (the grids do not depend on its size)."""
    return len(crop_boxes(100, 100, scales))


def query_crops(image: Image.Image, size: int, scales: Sequence[float] = CROP_SCALES) -> np.ndarray:
    """``(n, size, size, 3)`` uint8 model inputs, one per crop of :func:`crop_boxes` (the whole photo not included)."""
    # crop, then pad and resize as a whole photo is (resizing straight from the box measured 3 points worse)
    crops = [square_resize(image.crop(box), size) for box in crop_boxes(image.width, image.height, scales)]
    return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)


def lifts(rows: np.ndarray, scores: np.ndarray, agreeing: np.ndarray | None) -> tuple[tuple[int, float], ...]:
    """(row, lift) of each shortlisted ``rows`` (with their shortlist ``scores``) that rises in the album
    (:data:`LIFT`): above :data:`LIFT_FROM`, and ``agreeing`` with the label head at :data:`LIFT_LABELS`
    (None, no label head: nothing rises)."""
    if agreeing is None:
        return ()
    return tuple((int(row), LIFT * (float(score) - LIFT_FROM)) for row, score, agree in zip(rows, scores, agreeing) if agree and score > LIFT_FROM)


def shortlist(crop_rows: np.ndarray, crop_scores: np.ndarray, size: int = SHORTLIST) -> tuple[np.ndarray, np.ndarray]:
    """The ``size`` rows whose best crop scores highest, from each crop's own top rows ``(crops, n)``.

    Exact: a row among the best ``size`` by its best crop is among that crop's best ``size``.
    """
    rows = crop_rows.reshape(-1)
    scores = crop_scores.reshape(-1)
    valid = rows >= 0
    rows, scores = rows[valid], scores[valid]
    order = np.lexsort((-scores, rows))  # by row, best score first
    rows, scores = rows[order], scores[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    rows, scores = rows[first], scores[first]
    best = np.argsort(-scores, kind="stable")[:size]
    return rows[best], scores[best]


@dataclass(frozen=True)
class Verification:
    """What the photo's own keypoints say about a shortlist: rows to put first, and whether the first is the product."""

    #: verified rows, most evidence first; or, none verified, the likeliest (:data:`LIKELY_INLIERS`, a clear
    #: lead or the label head's agreement)
    pinned: tuple[int, ...] = ()
    #: agreeing matches of each pinned row
    inliers: tuple[int, ...] = ()
    #: the first pinned row is the very product in the photo
    exact: bool = False


class Verifier:
    """Geometric verification of shortlisted products against a photo's keypoints (module docstring).

    ``clear_lead``: when nothing is verified, the shortlist's best still comes first if its score is
    this much above the next candidate's (:data:`CLEAR_LEAD`, for a shortlist in the instance head's
    space, whose scores tell the very product apart; None: never)."""

    def __init__(self, store: LocalFeatureStore, clear_lead: float | None = None) -> None:
        self.store = store
        self.clear_lead = clear_lead

    def verify(
        self, query: LocalFeatures, rows: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, agreeing: np.ndarray | None = None
    ) -> Verification:
        """Match the shortlisted ``rows`` (with their global ``scores``) against the photo's keypoints.

        Candidates are ordered by their agreeing matches, the global score breaking near-ties
        (50 x the cosine: 0.02 of similarity is worth one match); the first is an exact match only
        when it also has the most matches of all, by :data:`EXACT_MARGIN`. ``agreeing``: for each
        row, whether the label head believes the photo shows its labels (:data:`LABELS_AGREE`); the
        first candidate in that order comes first on it when nothing else puts one first."""
        if len(rows) == 0:
            return Verification()
        similarity = np.asarray(scores, dtype=np.float64)
        inliers, geometric, inside = self._evidence(query, rows)
        order = np.argsort(-(inliers + 50.0 * similarity), kind="stable")
        pinned = [int(position) for position in order if inliers[position] >= PIN_INLIERS][:MAX_PINNED]
        if not pinned:
            leader = int(order[0])  # most agreeing matches, though too few to verify
            if inliers[leader] >= LIKELY_INLIERS:
                return Verification((int(rows[leader]),), (int(inliers[leader]),), False)
            if self.clear_lead is not None and len(similarity) > 1:
                (best,), (top,), (second,) = _two_nearest(similarity[None])
                if top - second >= self.clear_lead:
                    return Verification((int(rows[best]),), (int(inliers[best]),), False)
            if agreeing is not None and agreeing[leader]:
                return Verification((int(rows[leader]),), (int(inliers[leader]),), False)
            return Verification()
        first = inliers[pinned[0]]
        runner_up = np.sort(inliers)[-2] if len(inliers) > 1 else 0
        exact = bool(
            first >= EXACT_INLIERS and first >= EXACT_MARGIN * max(int(runner_up), 1) and first == inliers.max()
            and first >= COLOUR_SHARE * geometric[pinned[0]] and inside[pinned[0]] >= EXACT_INSIDE
        )  # fmt: skip
        return Verification(tuple(int(rows[p]) for p in pinned), tuple(int(inliers[p]) for p in pinned), exact)

    def _evidence(self, query: LocalFeatures, rows: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each candidate's matches that agree in place and colour, those that agree in place, and the
        share of its box inside the photo (all zero where nothing can be matched)."""
        import cv2

        inliers = np.zeros(len(rows), dtype=np.int64)
        geometric = np.zeros(len(rows), dtype=np.int64)
        inside = np.zeros(len(rows), dtype=np.float64)
        if len(query) < 2:
            return inliers, geometric, inside
        candidates = [self.store.features(int(row)) for row in rows]
        counts = np.array([len(points) for points, _, _, _ in candidates])
        if counts.sum() == 0:
            return inliers, geometric, inside
        owner = np.repeat(np.arange(len(rows)), counts)
        points = np.concatenate([points for points, _, _, _ in candidates]).astype(np.float32)
        colours = np.concatenate([colours for _, _, _, colours in candidates])
        similarity = root_sift(np.concatenate([descriptors for _, descriptors, _, _ in candidates])) @ query.descriptors.T
        nearest, best, second = _two_nearest(similarity)
        # unit vectors: squared distance = 2 - 2 x similarity
        good = np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0)) < RATIO * np.sqrt(np.maximum(2.0 - 2.0 * second, 0.0))
        good &= _one_per_photo_keypoint(owner, nearest, best, good)
        width, height = query.size
        for position in np.unique(owner[good]):
            chosen = good & (owner == position)
            if chosen.sum() < 4:
                continue
            transform, mask = cv2.estimateAffinePartial2D(points[chosen], query.points[nearest[chosen]], method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS)
            if transform is None or mask is None:
                continue
            scale, inside[position] = _placement(transform, candidates[position][2], width, height)
            if 0 < scale <= MAX_SCALE and inside[position] >= MIN_INSIDE:
                agreeing = mask.ravel().astype(bool)
                geometric[position] = int(agreeing.sum())
                inliers[position] = int(_same_colour(colours[chosen][agreeing], query.colours[nearest[chosen]][agreeing]).sum())
        return inliers, geometric, inside


def _two_nearest(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's most similar column, its similarity and the second best similarity (``similarity`` is
    changed, then restored). Two passes of max: ``np.argpartition`` took 160-310 ms on 10,000 x 900."""
    rows = np.arange(len(similarity))
    nearest = similarity.argmax(axis=1)
    best = similarity[rows, nearest]
    similarity[rows, nearest] = -np.inf
    second = similarity.max(axis=1)
    similarity[rows, nearest] = best
    return nearest, best, second


def _one_per_photo_keypoint(owner: np.ndarray, nearest: np.ndarray, similarity: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Keep each candidate's best match to each of the photo's keypoints only. Several catalogue keypoints
    matched to one photo keypoint agree with a transform that shrinks the product to that point; on
    a photo with few keypoints RANSAC picked that (rejected) transform over the real one."""
    chosen = np.flatnonzero(good)
    order = np.lexsort((-similarity[chosen], nearest[chosen], owner[chosen]))  # by candidate, photo keypoint, best first
    ranked = chosen[order]
    first = np.ones(len(ranked), dtype=bool)
    first[1:] = (owner[ranked][1:] != owner[ranked][:-1]) | (nearest[ranked][1:] != nearest[ranked][:-1])
    keep = np.zeros(len(good), dtype=bool)
    keep[ranked[first]] = True
    return keep


def _chromaticity(colours: np.ndarray) -> np.ndarray:
    """(r, g) shares of each RGB colour: brightness drops out; +10 keeps dark pixels from swinging wildly."""
    values = np.asarray(colours, dtype=np.float32) + 10.0
    return values[:, :2] / values.sum(axis=1, keepdims=True)


def _same_colour(catalogue: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """Which matched keypoints agree in colour: SIFT sees grey levels only, so the same shirt in red
    and in blue would match as well as itself. Chromaticity ignores exposure; the tolerance covers
    the photo's light (colour temperature +-15 % on red and blue)."""
    if len(photo) != len(catalogue) or len(photo) == 0 or catalogue.shape[1:] != (3,) or photo.shape[1:] != (3,):
        return np.ones(len(catalogue), dtype=bool)
    return np.abs(_chromaticity(catalogue) - _chromaticity(photo)).sum(axis=1) < COLOUR_TOLERANCE


def _placement(transform: np.ndarray, box: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """The catalogue product mapped into the photo: its scale, and the share of its box inside the photo."""
    scale = math.sqrt(abs(float(np.linalg.det(transform[:, :2]))))
    left, top, right, bottom = (float(v) for v in box)
    corners = np.array([[left, top], [right, top], [right, bottom], [left, bottom]], dtype=np.float64)
    mapped = corners @ transform[:, :2].T + transform[:, 2]
    low, high = mapped.min(axis=0), mapped.max(axis=0)
    area = float(np.prod(high - low))
    inside = float(np.prod(np.clip(np.minimum(high, [width, height]) - np.maximum(low, 0.0), 0.0, None)))
    return scale, inside / area if area > 0 else 0.0
