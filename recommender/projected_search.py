"""Exact top-k over many long vectors, reading a short projection of them instead of all of them.

A search over 44k ResNet50 vectors (2048 floats each, 360 MB) is bound by memory: every query
reads every byte. Here each vector ``x`` is split into its projection ``Px`` on the catalogue's
``dim`` leading directions (a truncated SVD of a sample) and the rest. For a query ``q``:

    q . x  =  Pq . Px  +  (rest of q) . (rest of x)   and   |(rest of q) . (rest of x)| <= |rest of q| |rest of x|

so ``Pq . Px`` (an 8x smaller read at ``dim`` 256) plus ``|rest of q| |rest of x|`` bounds every
score from above. The search scores the best ``shortlist`` products by that first pass exactly
(rows gathered from the full vectors), takes the k-th best exact score as the bar, and scores
exactly every other product whose upper bound reaches the bar. No product left out can beat the
bar, so the top k are the exact top k, whatever the data: the data only decides how many products
are scored exactly (a few hundred on real image features), that is, the speed.
"""

from __future__ import annotations

import numpy as np

#: rows of the catalogue the leading directions are estimated from (any directions keep results exact)
SAMPLE_ROWS = 2048
#: float32 rounding of the short dot product is far below this; it keeps the bound an upper bound
ROUNDING_MARGIN = 1e-4
#: added under the square roots of the residual norms: |x|^2 - |Px|^2 cancels, this keeps them from being underestimated
CANCELLATION_MARGIN = 1e-6
#: when more than this share of the products reach the bar, one full pass replaces the gathering
#: (features that barely differ, e.g. a randomly initialised network's, leave the bound nothing to prune)
FULL_SCAN_SHARE = 0.1
#: weight of the latest query in the running share of full passes (:attr:`ProjectedSearch.full_pass_share`)
SHARE_WEIGHT = 0.05
#: above this running share of full passes, the projection costs more than it saves (:meth:`ProjectedSearch.pays`) ...
UNPROFITABLE_SHARE = 0.5
#: ... and only every this many-th query still tries it, so the share follows the queries as they change
PROBE_EVERY = 16
#: rows projected at a time while fitting (keeps the temporary small)
CHUNK_ROWS = 2048
#: queries scored against the projection at a time (a (queries x rows) float32 block)
QUERY_CHUNK = 64


def leading_directions(sample: np.ndarray, count: int, seed: int, power_iterations: int = 2) -> np.ndarray:
    """The ``count`` leading right singular vectors of ``sample`` as columns (features x count): a
    randomised range finder with power iterations (Halko, Martinsson and Tropp 2011), the algorithm of
    scikit-learn's ``randomized_svd``. In numpy because importing scikit-learn costs a bot ~150 MB."""
    rng = np.random.default_rng(seed)
    width = min(count + 10, *sample.shape)
    sketch = sample.T @ rng.standard_normal((sample.shape[0], width)).astype(sample.dtype)
    for _ in range(power_iterations):
        sketch, _ = np.linalg.qr(sketch)
        sketch = sample.T @ (sample @ sketch)
    basis, _ = np.linalg.qr(sketch)
    _, _, right = np.linalg.svd(sample @ basis, full_matrices=False)
    return (basis @ right.T)[:, :count]


def _residual_norms(squared_norms: np.ndarray, projected: np.ndarray) -> np.ndarray:
    kept = np.einsum("ij,ij->i", projected, projected, dtype=np.float64)
    return np.sqrt(np.maximum(squared_norms - kept, 0.0) + CANCELLATION_MARGIN).astype(np.float32)


class ProjectedSearch:
    """Exact cosine top-k via a ``dim``-dimensional first pass and bounded re-scoring (see the module docstring)."""

    def __init__(self, dim: int = 256, shortlist: int = 32, seed: int = 0) -> None:
        self.dim = dim
        self.shortlist = shortlist
        self.seed = seed
        self._vectors: np.ndarray | None = None
        self._basis: np.ndarray | None = None
        self._projected: np.ndarray | None = None
        self._residuals: np.ndarray | None = None
        #: rows scored exactly by the last :meth:`search`, per query (how well the bound prunes)
        self.last_exact_rows: list[int] = []
        #: running share of recent queries that needed a full pass (the bound pruned too little)
        self.full_pass_share = 0.0
        self._skipped = 0

    def pays(self) -> bool:
        """Whether the next search should use the projection: not while recent queries mostly needed full passes.

        Queries far from the catalogue's own directions (features that barely differ, or photos
        unlike the catalogue's) leave the bound little to prune; a first pass is then wasted work.
        Every :data:`PROBE_EVERY`-th query tries anyway, so the projection comes back when it pays again.
        """
        if self.full_pass_share <= UNPROFITABLE_SHARE:
            return True
        self._skipped += 1
        self.last_exact_rows = []
        return self._skipped % PROBE_EVERY == 0

    def fit(self, vectors: np.ndarray) -> ProjectedSearch:
        """Estimate the leading directions from a seeded sample and project every row; returns self.

        ``vectors`` are kept as given (a memory-mapped file stays on disk: only the rows scored
        exactly are ever read back).
        """
        rows = len(vectors)
        rng = np.random.default_rng(self.seed)
        sample = np.asarray(vectors[np.sort(rng.choice(rows, size=min(rows, SAMPLE_ROWS), replace=False))], dtype=np.float32)
        basis = np.ascontiguousarray(leading_directions(sample, min(self.dim, *sample.shape), self.seed), dtype=np.float32)
        projected = np.empty((rows, basis.shape[1]), dtype=np.float32)
        residuals = np.empty(rows, dtype=np.float32)
        for start in range(0, rows, CHUNK_ROWS):
            chunk = np.asarray(vectors[start : start + CHUNK_ROWS], dtype=np.float32)
            projected[start : start + len(chunk)] = chunk @ basis
            squared = np.einsum("ij,ij->i", chunk, chunk, dtype=np.float64)
            residuals[start : start + len(chunk)] = _residual_norms(squared, projected[start : start + len(chunk)])
        self._vectors, self._basis, self._projected, self._residuals = vectors, basis, projected, residuals
        return self

    def candidates(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` rows and their first-pass (projected) scores: no exact scoring, no full
        pass, not counted in :meth:`pays`' statistics. For shortlists that another stage re-ranks."""
        if self._basis is None or self._projected is None:
            raise RuntimeError("ProjectedSearch.candidates called before fit")
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        first_pass = (queries @ self._basis) @ self._projected.T
        if allowed is not None:
            first_pass[:, ~allowed] = -np.inf
        k = min(k, first_pass.shape[1] if allowed is None else int(np.count_nonzero(allowed)))
        if k == 0:
            return np.zeros((len(queries), 0), dtype=np.int64), np.zeros((len(queries), 0), dtype=np.float32)
        top = np.argpartition(-first_pass, k - 1, axis=1)[:, :k] if k < first_pass.shape[1] else np.tile(np.arange(k), (len(queries), 1))
        scores = np.take_along_axis(first_pass, top, axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1).astype(np.int64), np.take_along_axis(scores, order, axis=1).astype(np.float32)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` rows and similarities per query, best first (ties: lower row first).

        ``allowed``: a bool mask of the rows that may be returned (``k`` at most as many as it allows).
        """
        if self._vectors is None or self._basis is None or self._projected is None or self._residuals is None:
            raise RuntimeError("ProjectedSearch.search called before fit")
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        available = len(self._vectors) if allowed is None else int(np.count_nonzero(allowed))
        k = min(k, available)
        rows_out = np.empty((len(queries), k), dtype=np.int64)
        scores_out = np.empty((len(queries), k), dtype=np.float32)
        exact_rows: list[int] = []
        for start in range(0, len(queries), QUERY_CHUNK):
            chunk = queries[start : start + QUERY_CHUNK]
            short = chunk @ self._basis
            rest = _residual_norms(np.einsum("ij,ij->i", chunk, chunk, dtype=np.float64), short)
            first_pass = short @ self._projected.T
            if allowed is not None:
                first_pass[:, ~allowed] = -np.inf  # never shortlisted, and their bound never reaches the bar
            for offset, query in enumerate(chunk):
                rows, scores, scored = self._exact_top(query, first_pass[offset], float(rest[offset]), k, allowed, available)
                rows_out[start + offset], scores_out[start + offset] = rows, scores
                exact_rows.append(scored)
                self.full_pass_share += SHARE_WEIGHT * ((scored == len(self._vectors)) - self.full_pass_share)
        self.last_exact_rows = exact_rows
        return rows_out, scores_out

    def _exact_top(
        self, query: np.ndarray, first_pass: np.ndarray, rest: float, k: int, allowed: np.ndarray | None, available: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """The exact top ``k`` of one query among the ``allowed`` rows (``available`` of them), and how many rows it scored exactly."""
        assert self._vectors is not None and self._residuals is not None
        count = len(first_pass)
        shortlist = min(available, max(self.shortlist, 2 * k))
        candidates = np.argpartition(-first_pass, shortlist - 1)[:shortlist] if shortlist < count else np.arange(count)
        candidates.sort()  # ascending rows read the vectors (a memory-mapped file) in order
        exact = self._vectors[candidates] @ query
        bar = np.partition(exact, len(exact) - k)[len(exact) - k]
        upper = first_pass + rest * self._residuals + ROUNDING_MARGIN
        reaching = np.flatnonzero(upper >= bar)
        if len(reaching) > count * FULL_SCAN_SHARE:  # the bound prunes too little here: one full pass is cheaper than gathering
            exact = np.asarray(self._vectors @ query, dtype=np.float32)
            if allowed is not None:
                exact[~allowed] = -np.inf
            top = np.argpartition(-exact, k - 1)[:k] if k < count else np.arange(count)
            order = np.lexsort((top, -exact[top]))
            return top[order], exact[top][order], count
        others = np.setdiff1d(reaching, candidates, assume_unique=True)
        if len(others):
            candidates = np.concatenate([candidates, others])
            exact = np.concatenate([exact, self._vectors[others] @ query])
        order = np.lexsort((candidates, -exact))[:k]
        return candidates[order], exact[order].astype(np.float32), len(candidates)
