"""Per-slot bottom-m reservoirs: the exact streaming core behind top-k, interval and random samples."""

from __future__ import annotations

from typing import Callable

import numpy as np

INDEX_EMPTY = np.iinfo(np.int64).max

WindowFetch = Callable[[np.ndarray], np.ndarray]


def rank_in_groups(groups: np.ndarray) -> np.ndarray:
    """For a sorted array of group ids, each element's position within its run of equal ids."""
    n = len(groups)
    if n == 0:
        return np.zeros(0, np.int64)
    new = np.empty(n, bool)
    new[0] = True
    np.not_equal(groups[1:], groups[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    lengths = np.diff(np.append(starts, n))
    return np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)


class BottomSlots:
    """For each slot, the `m` entries with the smallest (key, token index) offered so far, with their windows.

    A slot's content is the bottom-m of everything ever offered to it, which depends only on the set of
    entries and never on their order or grouping: batch sizes, shard merges and re-binning (the bottom-m of a
    union is the bottom-m of the parts' bottom-m) all rely on this. Places within a slot are unordered so
    that a newcomer is written once, into the place of the entry it evicts, and survivors never move (windows
    are most of the bytes); `sorted()` orders them for output. Empty places hold key +inf and index
    INDEX_EMPTY; `thr_*` is each slot's largest (key, index), which a candidate must beat, and its place.
    """

    def __init__(self, n_slots: int, m: int, width: int):
        self.m = int(m)
        self.width = int(width)
        self.key = np.full((n_slots, self.m), np.inf)
        self.index = np.full((n_slots, self.m), INDEX_EMPTY, np.int64)
        self.value = np.full((n_slots, self.m), np.nan, np.float32)
        # Windows of empty places are never used, so they start as zeros: pages that cost no memory or time
        # until a place in them is filled (the interval reservoirs are large and fill slowly).
        self.window = np.zeros((n_slots, self.m, self.width), np.float32)
        self.thr_key = np.full(n_slots, np.inf)
        self.thr_index = np.full(n_slots, INDEX_EMPTY, np.int64)
        self.thr_place = np.full(n_slots, self.m - 1, np.int64)

    @property
    def n_slots(self) -> int:
        return self.key.shape[0]

    def offer(
        self, slot: np.ndarray, key: np.ndarray, index: np.ndarray, value: np.ndarray, windows: WindowFetch
    ) -> None:
        """Offer candidate entries; `windows(sel)` gives the [len(sel), width] windows of candidates `sel`.

        Candidates are first compared against each slot's threshold, so once the reservoirs are warm almost
        nothing gets past this filter, and windows are gathered only for entries that are kept.
        """
        if self.m == 0 or len(slot) == 0:
            return
        tk = self.thr_key[slot]
        keep = key < tk
        tie = key == tk
        if tie.any():
            keep |= tie & (index < self.thr_index[slot])
        sel = np.flatnonzero(keep)
        if len(sel) == 0:
            return
        # A lone candidate of a slot beat its largest entry, so it takes that entry's place. Once the
        # reservoirs are warm nearly every candidate is alone, and only the rest need ranking.
        alone = np.bincount(slot[sel], minlength=self.n_slots)[slot[sel]] == 1
        lone = sel[alone]
        lone_rows = slot[lone]
        rows, places, chosen, crowded = self._placements(slot, key, index, sel[~alone])
        rows = np.concatenate([lone_rows, rows])
        places = np.concatenate([self.thr_place[lone_rows], places])
        chosen = np.concatenate([lone, chosen])
        self.key[rows, places] = key[chosen]
        self.index[rows, places] = index[chosen]
        self.value[rows, places] = value[chosen]
        self.window[rows, places] = windows(chosen)
        self._refresh_thresholds(np.concatenate([lone_rows, crowded]))

    def _placements(
        self, slot: np.ndarray, key: np.ndarray, index: np.ndarray, sel: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        """Where candidates `sel` (slots with several) land: (slot, place, candidate) per win, and the slots."""
        m = self.m
        if len(sel) == 0:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty, empty
        c_slot, c_key, c_index = slot[sel], key[sel], index[sel]
        order = np.lexsort((c_index, c_key, c_slot))
        c_rank = rank_in_groups(c_slot[order])
        # A slot never takes more than m of one batch's candidates.
        order, c_rank = order[c_rank < m], c_rank[c_rank < m]
        c_slot, c_key, c_index, sel = c_slot[order], c_key[order], c_index[order], sel[order]

        first = np.empty(len(c_slot), bool)
        first[0] = True
        np.not_equal(c_slot[1:], c_slot[:-1], out=first[1:])
        touched = c_slot[first]
        local = np.cumsum(first) - 1
        nu = len(touched)
        ek, ei = self.key[touched], self.index[touched]

        # Rank of each held entry among its slot's held entries; the sort is stable, so place order breaks
        # ties between empties.
        held_rank = np.empty((nu, m), np.int64)
        held_rank[np.arange(nu)[:, None], np.lexsort((ei, ek), axis=1)] = np.arange(m)
        # How many held entries each candidate beats, and so where it lands in the union.
        lk, li = ek[local], ei[local]
        below = ((lk < c_key[:, None]) | ((lk == c_key[:, None]) & (li < c_index[:, None]))).sum(axis=1)
        wins = (c_rank + below) < m
        # A held entry of rank r is preceded by the candidates that beat at most r held entries.
        le = np.bincount(local * (m + 1) + below, minlength=nu * (m + 1)).reshape(nu, m + 1).cumsum(axis=1)
        evicted = held_rank + np.take_along_axis(le, held_rank, axis=1) >= m
        # Per slot, as many places are evicted as candidates win; both lists ascend by slot, so they pair up.
        ev_row, ev_place = np.nonzero(evicted)
        return touched[ev_row], ev_place, sel[wins], touched

    def _refresh_thresholds(self, slots: np.ndarray) -> None:
        """Each slot's largest (key, index) and its place: the last of equal ones, as held ranks order them."""
        k, i = self.key[slots], self.index[slots]
        top = k.max(axis=1)
        at_top = k == top[:, None]
        top_index = np.where(at_top, i, np.iinfo(np.int64).min).max(axis=1)
        last = (at_top & (i == top_index[:, None]))[:, ::-1].argmax(axis=1)
        self.thr_key[slots] = top
        self.thr_index[slots] = top_index
        self.thr_place[slots] = self.m - 1 - last

    def sorted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(value, index, window) per slot in ascending (key, index) order; empty places NaN / -1."""
        order = np.lexsort((self.index, self.key), axis=-1)
        empty = np.take_along_axis(self.index, order, 1) == INDEX_EMPTY
        value = np.take_along_axis(self.value, order, 1)
        index = np.where(empty, -1, np.take_along_axis(self.index, order, 1))
        window = np.take_along_axis(self.window, order[:, :, None], 1)
        value[empty] = np.nan
        window[empty] = np.nan
        return value, index, window

    def entries(self, slots: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """The filled places of `slots` (all slots when None): (slot, key, index, value, flat position)."""
        if slots is None:
            pos = np.flatnonzero(self.index.ravel() != INDEX_EMPTY)
        else:
            pos = (np.asarray(slots, np.int64)[:, None] * self.m + np.arange(self.m)).ravel()
            pos = pos[self.index.ravel()[pos] != INDEX_EMPTY]
        return pos // max(self.m, 1), self.key.ravel()[pos], self.index.ravel()[pos], self.value.ravel()[pos], pos

    def window_rows(self, pos: np.ndarray) -> np.ndarray:
        return self.window.reshape(-1, self.width)[pos]

    def clear(self, slots: np.ndarray) -> None:
        # Windows of empty places are never read, so they are left as they are.
        self.key[slots] = np.inf
        self.index[slots] = INDEX_EMPTY
        self.value[slots] = np.nan
        self.thr_key[slots] = np.inf
        self.thr_index[slots] = INDEX_EMPTY
        self.thr_place[slots] = self.m - 1

    def offer_from(self, other: "BottomSlots", remap: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """Offer every entry held by `other` (slots optionally remapped), e.g. to merge a shard."""
        slot, key, index, value, pos = other.entries()
        if remap is not None:
            slot = remap(slot)
        self.offer(slot, key, index, value, lambda sel: other.window_rows(pos[sel]))

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.key": self.key, f"{prefix}.index": self.index,
                f"{prefix}.value": self.value, f"{prefix}.window": self.window}

    def load(self, state: dict, prefix: str) -> None:
        for name in ("key", "index", "value", "window"):
            arr = np.asarray(state[f"{prefix}.{name}"])
            target = getattr(self, name)
            if arr.shape != target.shape:
                raise ValueError(f"{prefix}.{name} has shape {arr.shape}, expected {target.shape}")
            target[...] = arr
        self._refresh_thresholds(np.arange(self.n_slots))
