"""The 2-D map: UMAP on cosine distance, seeded, with numba's compile time reported apart from the fit."""

from __future__ import annotations

import time
import warnings

import numpy as np

# UMAP computes exact distances below this many rows and searches with pynndescent above it;
# the two paths compile different numba kernels.
_EXACT_BELOW = 4096
# Up to this many rows the layout computes the exact k-NN graph itself (blocked products, about a second at the top)
# and hands it to UMAP, so pynndescent's kernels are never compiled: that compile alone is about 15 CPU-s.
_EXACT_KNN_UP_TO = 20_000
_KNN_BLOCK = 2048
_warmed: set[str] = set()


def warm_up(approximate: bool = True, transform: bool = False) -> float:
    """Compile the numba kernels a fit will use on a tiny input; seconds spent (0 when already warm).

    `approximate` compiles the pynndescent search that fits of 4096+ rows use, `transform` the
    placement of extra rows; each is compiled once per process.
    """
    wanted = {"fit"} | ({"approximate"} if approximate else set()) | ({"transform"} if transform else set())
    if wanted <= _warmed:
        return 0.0
    t0 = time.perf_counter()
    tiny = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _umap(5, 0.1, 0, n_epochs=5, force_approximation_algorithm=approximate).fit(tiny)
        if transform:
            model.transform(tiny[:4])
    _warmed.update(wanted)
    return time.perf_counter() - t0


def umap_layout(
    vectors: np.ndarray,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    sample_above: int = 50_000,
    knn: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """[n, 2] float32 map coordinates and timings {'compile_s', 'fit_s'}; same inputs give the same map.

    Above `sample_above` rows UMAP is fitted on a seeded sample and the rest are placed with
    `transform`. `knn` is a precomputed cosine graph over the same rows, self first (as
    `neighbours.knn_graph` returns); it is ignored when sampling, since it covers the wrong rows.
    Coordinates are centred on the bounding box and scaled so the longer side spans [-1, 1].
    """
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    sampled = n > sample_above
    k = min(n_neighbors, n - 1)
    if not sampled and knn is None and _EXACT_BELOW <= n <= _EXACT_KNN_UP_TO:
        knn = exact_knn(x, k)
    searches = sampled or (n >= _EXACT_BELOW and knn is None)
    compile_s = warm_up(approximate=searches, transform=sampled) if n >= 8 else 0.0
    timings = {"compile_s": compile_s, "fit_s": 0.0}
    t0 = time.perf_counter()
    if n < 8:
        xy = _tiny_layout(x)  # UMAP's spectral init and kNN need more points than this
    else:
        with warnings.catch_warnings():
            # "n_jobs overridden by random_state": the single thread is what makes it reproducible.
            warnings.filterwarnings("ignore", message=".*n_jobs.*")
            # a precomputed graph leaves UMAP no search index to place new rows with; none are placed
            warnings.filterwarnings("ignore", message=".*knn_search_index.*")
            if sampled:
                chosen = np.zeros(n, bool)
                chosen[np.random.default_rng(seed).choice(n, sample_above, replace=False)] = True
                model = _umap(k, min_dist, seed).fit(x[chosen])
                xy = np.empty((n, 2), dtype=np.float32)
                xy[chosen] = model.embedding_
                xy[~chosen] = model.transform(x[~chosen])
            else:
                pre = (None, None, None)
                if knn is not None and knn[0].shape[0] == n and knn[0].shape[1] >= k:
                    pre = (np.ascontiguousarray(knn[0][:, :k]), np.ascontiguousarray(knn[1][:, :k]))
                xy = _umap(k, min_dist, seed, precomputed_knn=pre).fit(x).embedding_
    timings["fit_s"] = time.perf_counter() - t0
    return _normalise(np.asarray(xy, dtype=np.float64)), timings


def exact_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact cosine k-NN graph of the rows of `x` in UMAP's `precomputed_knn` form: [n, k+1] indices, self
    first, and distances 1 - cos; ties go to the smaller index."""
    from atlas.analysis.neighbours import TIE_GRID, unit_rows

    units, _ = unit_rows(x)
    n = len(units)
    idx = np.empty((n, k + 1), dtype=np.int64)
    dist = np.empty((n, k + 1), dtype=np.float32)
    for s in range(0, n, _KNN_BLOCK):
        rows = np.arange(s, min(s + _KNN_BLOCK, n))
        d = 1.0 - units[rows] @ units.T
        d[np.arange(len(rows)), rows] = -np.inf  # self first, whatever its own distance rounds to
        part = np.argpartition(d, k, axis=1)[:, : k + 1]
        pd = np.take_along_axis(d, part, 1)
        order = np.lexsort((part, np.round(pd / TIE_GRID)), axis=1)
        idx[rows] = np.take_along_axis(part, order, 1)
        dist[rows] = np.take_along_axis(pd, order, 1)
    dist[:, 0] = 0.0
    return idx, dist


def _umap(n_neighbors, min_dist, seed, **kwargs):
    import umap

    return umap.UMAP(
        n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine", random_state=seed,
        n_components=2, **kwargs,
    )


def _tiny_layout(x: np.ndarray) -> np.ndarray:
    n = len(x)
    if n <= 1:
        return np.zeros((n, 2))
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    xy = np.zeros((n, 2))
    r = min(2, len(s))
    xy[:, :r] = u[:, :r] * s[:r]
    return xy


def _normalise(xy: np.ndarray) -> np.ndarray:
    if len(xy) == 0:
        return xy.astype(np.float32)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    half = (hi - lo).max() / 2
    out = (xy - (lo + hi) / 2) / (half if half > 0 else 1.0)
    return np.round(out, 6).astype(np.float32)


def cluster_positions(global_labels: np.ndarray, xy: np.ndarray, n_clusters: int | None = None) -> np.ndarray:
    """[k, 2] where to print each cluster's name: the member nearest its members' mean, so a label
    never floats over empty sea between two lobes of a curved cluster."""
    labels = np.asarray(global_labels)
    k = n_clusters or int(labels.max()) + 1
    out = np.full((k, 2), np.nan, dtype=np.float32)
    for c in np.unique(labels):
        pts = xy[labels == c]
        mean = pts.mean(axis=0)
        out[c] = pts[np.argmin(((pts - mean) ** 2).sum(axis=1))]
    return out
