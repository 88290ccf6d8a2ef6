"""The single pass over the corpus: SAE codes in, per-feature statistics whose memory does not grow with tokens."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from atlas.config import HarvestSection
from atlas.errors import DimensionError
from atlas.harvest.coact import DenseCoact, SparseCoact
from atlas.harvest.grid import (
    NO_GRID, SALT_INTERVAL, SALT_RANDOM, coarsen_counts, float32_parts, grid_exponent, sample_key, sub_bin,
    sum_from_parts,
)
from atlas.harvest.partials import HarvestPartial, check_layout, load_coact, partial_from_state
from atlas.harvest.result import HarvestResult, histogram, intervals
from atlas.harvest.slots import BottomSlots
from atlas.saes.record import SparseCodes


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class _Batch:
    """One batch's nonzero codes, sorted by (feature, row), and its sequence bounds: gathers sample windows.

    A window is a run of one feature's rows, so it is read from the sorted nonzeros (a few kilobytes per
    feature, found by binary search) rather than from the dense codes, where every row of it would be a
    cache miss 4*F bytes from the last.
    """

    def __init__(self, t: np.ndarray, f: np.ndarray, values: np.ndarray, n_features: int, seq_id: np.ndarray,
                 half: int):
        n = len(seq_id)
        # Row-major nonzeros sorted stably by feature are in (feature, row) order; radix sort on 16-bit ids.
        order = np.argsort(f.astype(np.uint16) if n_features <= 1 << 16 else f, kind="stable")
        self.key = (f * n + t)[order]
        self.values = values[order]
        self.n_rows = n
        self.half = half
        change = np.flatnonzero(seq_id[1:] != seq_id[:-1]) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [n]])
        seg = np.zeros(n, np.int64)
        seg[change] = 1
        np.cumsum(seg, out=seg)
        self.lo, self.hi = starts[seg], ends[seg]

    def windows(self, rows: np.ndarray, feats: np.ndarray) -> np.ndarray:
        """[len(rows), 2*half+1] codes around each (row, feature); NaN outside the row's sequence."""
        half = self.half
        lo, hi = self.lo[rows], self.hi[rows]
        r = rows[:, None] + np.arange(-half, half + 1)
        out = np.where((r >= lo[:, None]) & (r < hi[:, None]), np.float32(0), np.float32(np.nan))
        base = feats * self.n_rows
        start = np.searchsorted(self.key, base + np.maximum(rows - half, lo))
        stop = np.searchsorted(self.key, base + np.minimum(rows + half, hi - 1), side="right")
        n = stop - start
        owner = np.repeat(np.arange(len(rows)), n)
        pos = np.arange(n.sum()) + np.repeat(start - (np.cumsum(n) - n), n)
        out[owner, self.key[pos] - base[owner] - rows[owner] + half] = self.values[pos]
        return out


class Harvester:
    """Streams SAE codes batch by batch and keeps, per feature, everything the atlas shows.

    Every kept quantity is a pure function of the set of (feature, token) activations: counts and histograms
    are integer sums on a grid fixed by the final max, sums are exact (integer mantissas per exponent), and
    samples are bottom-m selections by (key, token index). So batch sizes, batch order, checkpoints and
    `merge` of shards all give identical results (co-activation above `coact_dense_max` excepted).
    """

    def __init__(self, n_features: int, cfg: HarvestSection, seed: int = 0):
        self.n_features = int(n_features)
        self.cfg = cfg
        self.seed = int(seed)
        f = self.n_features
        width = 2 * cfg.window + 1
        # Interval sub-bins: between cap/2 and cap cover [0, max], at least two per interval.
        self._ni = _pow2_at_least(max(64, 4 * cfg.n_intervals))
        # The histogram grid refines the interval grid, so interval counts come from it for free.
        self._nh = max(self._ni, _pow2_at_least(16 * cfg.hist_bins))
        self._shift = self._nh.bit_length() - self._ni.bit_length()
        self.n_tokens = 0
        self.count = np.zeros(f, np.int64)
        self._mant = np.zeros((f, 256), np.int64)
        self.max = np.zeros(f, np.float32)
        self._exp = np.full(f, NO_GRID, np.int32)  # interval sub-bin width is 2**exp
        self._hist = np.zeros((f, self._nh), np.int64)
        self._top = BottomSlots(f, cfg.top_k, width)
        self._intervals = BottomSlots(f * self._ni, cfg.per_interval, width)
        self._random = BottomSlots(f, cfg.n_random, width)
        if f <= cfg.coact_dense_max:
            self._coact: DenseCoact | SparseCoact = DenseCoact(f)
        else:
            self._coact = SparseCoact(f, 4 * max(cfg.coact_keep, cfg.coact_top))

    # -- streaming ---------------------------------------------------------------------------------------

    def update(self, acts: SparseCodes | torch.Tensor | np.ndarray, token_index: np.ndarray,
               seq_id: np.ndarray) -> None:
        """Add one batch of codes, sparse or dense [T, F]; rows of a sequence are contiguous and whole in the batch.

        Windows show every code with a bit set (-0.0 and NaN included); only codes > 0 fire.
        """
        codes = acts if isinstance(acts, SparseCodes) else SparseCodes.from_dense(acts)
        if codes.n_features != self.n_features:
            raise DimensionError(f"harvest expects codes [T, {self.n_features}], got [{codes.n_rows}, "
                                 f"{codes.n_features}]")
        token_index = np.asarray(token_index, np.int64).reshape(-1)
        seq_id = np.asarray(seq_id, np.int64).reshape(-1)
        n_rows = codes.n_rows
        if len(token_index) != n_rows or len(seq_id) != n_rows:
            raise DimensionError(
                f"harvest batch has {n_rows} rows but {len(token_index)} token indices and {len(seq_id)} sequence ids"
            )
        if n_rows == 0:
            return
        flat, values = codes.flat, codes.values
        t_nz, f_nz = np.divmod(flat, self.n_features)
        batch = _Batch(t_nz, f_nz, values, self.n_features, seq_id, self.cfg.window)
        fires = values > 0
        t, f, v = t_nz[fires], f_nz[fires], values[fires]
        # Pair counting shares nothing with the rest and mostly waits on memory, so it runs beside it on the
        # core that numpy leaves idle.
        with ThreadPoolExecutor(1) as pool:
            pairs = pool.submit(self._coact.update, t, f, n_rows)
            self._sample(t, f, v, token_index[t], batch)
            pairs.result()
        self.n_tokens += n_rows

    def _sample(self, t: np.ndarray, f: np.ndarray, v: np.ndarray, g: np.ndarray, batch: _Batch) -> None:
        """Sums, maxima and histograms, then the three sample reservoirs, for firing (row, feature, value)."""
        self._accumulate(f, v)

        def fetch(sel: np.ndarray) -> np.ndarray:
            return batch.windows(t[sel], f[sel])

        self._top.offer(f, -v.astype(np.float64), g, v, fetch)
        self._random.offer(f, sample_key(self.seed, SALT_RANDOM, f, g), g, v, fetch)
        slot = f * self._ni + sub_bin(v, self._exp[f], self._ni)
        self._intervals.offer(slot, sample_key(self.seed, SALT_INTERVAL, f, g), g, v, fetch)

    def _accumulate(self, f: np.ndarray, v: np.ndarray) -> None:
        nf = self.n_features
        self.count += np.bincount(f, minlength=nf)
        expo, mant = float32_parts(v)
        torch.from_numpy(self._mant).view(-1).index_add_(0, torch.from_numpy(f * 256 + expo), torch.from_numpy(mant))
        batch_max = torch.zeros(nf).scatter_reduce_(0, torch.from_numpy(f), torch.from_numpy(v), "amax").numpy()
        self._grow_grids(np.maximum(self.max, batch_max))
        hb = sub_bin(v, self._exp[f] - self._shift, self._nh)
        torch.from_numpy(self._hist).view(-1).index_add_(
            0, torch.from_numpy(f * self._nh + hb), torch.ones(len(f), dtype=torch.int64)
        )

    def _grow_grids(self, new_max: np.ndarray) -> None:
        """Raise the max; where a feature's grid no longer covers it, double its width (merging sub-bins)."""
        need = grid_exponent(new_max, self._ni)
        rows = np.flatnonzero((need > self._exp) & (self._exp != NO_GRID))
        if len(rows):
            shift = (need[rows] - self._exp[rows]).astype(np.int64)
            self._hist[rows] = coarsen_counts(self._hist[rows], shift)
            slots = (rows[:, None] * self._ni + np.arange(self._ni)).ravel()
            slot, key, index, value, pos = self._intervals.entries(slots)
            windows = self._intervals.window_rows(pos)
            self._intervals.clear(slots)
            by_feature = np.zeros(self.n_features, np.int64)
            by_feature[rows] = shift
            feat = slot // self._ni
            moved = feat * self._ni + ((slot % self._ni) >> np.minimum(by_feature[feat], 62))
            self._intervals.offer(moved, key, index, value, lambda sel: windows[sel])
        self._exp = np.maximum(self._exp, need)
        self.max = new_max.astype(np.float32)

    # -- shards and checkpoints --------------------------------------------------------------------------

    def merge(self, other: "Harvester") -> None:
        """Fold in another shard's harvest (same features, config and seed); exact, leaves `other` as is."""
        if other.n_features != self.n_features or other.seed != self.seed or other.cfg != self.cfg:
            raise DimensionError("can only merge harvests with the same number of features, config and seed")
        self.n_tokens += other.n_tokens
        self.count += other.count
        self._mant += other._mant
        self._grow_grids(np.maximum(self.max, other.max))
        rows = np.flatnonzero(other._exp != NO_GRID)
        shift = (self._exp[rows] - other._exp[rows]).astype(np.int64)
        self._hist[rows] += coarsen_counts(other._hist[rows], shift)
        by_feature = np.zeros(self.n_features, np.int64)
        by_feature[rows] = shift

        def remap(slot: np.ndarray) -> np.ndarray:
            feat = slot // self._ni
            return feat * self._ni + ((slot % self._ni) >> np.minimum(by_feature[feat], 62))

        self._intervals.offer_from(other._intervals, remap)
        self._top.offer_from(other._top)
        self._random.offer_from(other._random)
        self._coact.merge(other._coact)

    def state_dict(self) -> dict:
        """Plain numpy arrays and ints (np.savez-able). Arrays are live views: save before the next update."""
        state = {
            "n_features": self.n_features, "seed": self.seed, "n_tokens": self.n_tokens,
            "count": self.count, "mant": self._mant, "max": self.max, "exp": self._exp, "hist": self._hist,
        }
        state.update(self._top.state("top"))
        state.update(self._intervals.state("intervals"))
        state.update(self._random.state("random"))
        state.update(self._coact.state())
        return state

    @classmethod
    def from_state(cls, state: dict, cfg: HarvestSection) -> "Harvester":
        h = cls(int(state["n_features"]), cfg, seed=int(state["seed"]))
        h.n_tokens = int(state["n_tokens"])
        for name, attr in (("count", "count"), ("mant", "_mant"), ("max", "max"), ("exp", "_exp"),
                           ("hist", "_hist")):
            src = np.asarray(state[name])
            if src.shape != getattr(h, attr).shape:
                raise DimensionError(f"harvest checkpoint '{name}' has shape {src.shape}; the config implies "
                                     f"{getattr(h, attr).shape} (was the [harvest] config changed?)")
            getattr(h, attr)[...] = src
        h._top.load(state, "top")
        h._intervals.load(state, "intervals")
        h._random.load(state, "random")
        h._coact.load(state)
        return h

    def partial_frames(self) -> HarvestPartial:
        """This shard's state as long-format tables, for merging with other shards in the store."""
        return partial_from_state(self.state_dict(), self._ni)

    @classmethod
    def from_partial(cls, partial: HarvestPartial, cfg: HarvestSection, seed: int = 0) -> "Harvester":
        """The streaming state that (merged) partial tables describe: the inverse of `partial_frames`."""
        h = cls(partial.n_features, cfg, seed=seed)
        reservoirs = {"top": (h._top, 1), "interval": (h._intervals, h._ni), "random": (h._random, 1)}
        check_layout(partial, h.n_features, {k: r.m for k, (r, _) in reservoirs.items()},
                     getattr(h._coact, "capacity", 0))
        h.n_tokens = partial.n_tokens
        feature, count, max_value, exp = partial.columns("features", "feature", "count", "max", "exp")
        h.count[feature], h.max[feature], h._exp[feature] = count, max_value, exp
        feature, expo, mant = partial.columns("sums", "feature", "expo", "mant")
        h._mant[feature, expo] = mant
        feature, bin_, n = partial.columns("hist", "feature", "bin", "n")
        h._hist[feature, bin_] = n
        for kind, (slots, per_feature) in reservoirs.items():
            feature, sub, key, index, value, windows = partial.samples(kind, slots.width)
            slots.offer(feature.astype(np.int64) * per_feature + sub, key, index, value, lambda sel: windows[sel])
        load_coact(h._coact, partial)
        return h

    # -- the end ----------------------------------------------------------------------------------------

    def finalize(self) -> HarvestResult:
        cfg = self.cfg
        nf = self.n_features
        sub_counts = self._hist.reshape(nf, self._ni, -1).sum(axis=2)
        i_edges, i_counts, i_share, i_vals, i_index, i_wins = intervals(
            sub_counts, self.max, self._exp, cfg.n_intervals, self._intervals
        )
        h_exp = np.where(self._exp == NO_GRID, NO_GRID, self._exp - self._shift).astype(np.int32)
        h_edges, h_counts = histogram(self._hist, self.max, h_exp, cfg.hist_bins)
        top_vals, top_index, top_windows = self._top.sorted()
        rnd_vals, rnd_index, rnd_windows = self._random.sorted()
        co = self._coact.summarise(self.count, cfg.coact_keep, cfg.coact_top)
        return HarvestResult(
            n_tokens=self.n_tokens, count=self.count.copy(), sum=sum_from_parts(self._mant), max=self.max.copy(),
            top_vals=top_vals, top_index=top_index, top_windows=top_windows,
            interval_edges=i_edges, interval_counts=i_counts, interval_share=i_share, interval_vals=i_vals,
            interval_index=i_index, interval_windows=i_wins,
            random_vals=rnd_vals, random_index=rnd_index, random_windows=rnd_windows,
            hist_edges=h_edges, hist_counts=h_counts,
            coact=co.coact, coact_top_idx=co.top_idx, coact_top_score=co.top_score.astype(np.float32),
            coact_top_count=co.top_count, coact_exact=self._coact.exact,
        )
