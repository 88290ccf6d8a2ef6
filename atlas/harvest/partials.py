"""A shard's harvest as long-format Arrow tables: what a shard hands over to be merged in the store.

Each table holds only what the shard saw (features that fired, nonzero sum parts, bins and pairs, filled
reservoir places), binned on the shard's own grids. The store merges the tables of many shards in SQL
(atlas/store/partials.py); `Harvester.from_partial` turns merged tables back into streaming state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atlas.errors import DimensionError
from atlas.harvest.coact import DenseCoact, SparseCoact
from atlas.harvest.slots import INDEX_EMPTY, rank_in_groups

# Reservoir kinds and the state_dict prefix of each.
SAMPLE_KINDS = {"top": "top", "interval": "intervals", "random": "random"}

# Table name -> columns. `exp` is the feature's grid exponent (interval sub-bin width 2**exp); histogram bins and
# interval sub-bins are on that grid, so a coarser grid e' maps them to `b >> (e' - exp)`. Sample `sub` is the
# interval sub-bin (0 for top and random samples); `acts` is the activation window around the token.
# The store's partial tables (atlas/store/partials.py) take their columns from these.
SCHEMAS: dict[str, pa.Schema] = {
    "features": pa.schema([("feature", pa.int32()), ("count", pa.int64()), ("max", pa.float32()),
                           ("exp", pa.int32())]),
    "sums": pa.schema([("feature", pa.int32()), ("expo", pa.int16()), ("mant", pa.int64())]),
    "hist": pa.schema([("feature", pa.int32()), ("bin", pa.int32()), ("n", pa.int64())]),
    "samples": pa.schema([("kind", pa.string()), ("feature", pa.int32()), ("sub", pa.int32()), ("key", pa.float64()),
                          ("idx", pa.int64()), ("value", pa.float32()), ("acts", pa.list_(pa.float32()))]),
    "coact_pairs": pa.schema([("lo", pa.int32()), ("hi", pa.int32()), ("n", pa.int64())]),
    "coact_summary": pa.schema([("feature", pa.int32()), ("partner", pa.int32()), ("n", pa.int64())]),
    "coact_err": pa.schema([("feature", pa.int32()), ("err", pa.int64())]),
}

_PAIR_ROWS = 1024  # dense co-activation rows scanned at a time, so the nonzero mask stays small


@dataclass
class HarvestPartial:
    """One shard's harvest state (or the merge of several) as the long-format tables of SCHEMAS.

    A feature absent from `features` never fired (count 0, max 0, no grid). Co-activation is either exact
    pair counts (`coact_pairs`, lo < hi; `coact_capacity` 0) or a Misra-Gries summary of `coact_capacity`
    partners per feature (`coact_summary` with its per-feature `coact_err`).
    """

    n_features: int
    n_tokens: int
    slots: dict[str, int]  # reservoir size per sample kind
    coact_capacity: int
    tables: dict[str, pa.Table]

    def columns(self, table: str, *names: str) -> tuple[np.ndarray, ...]:
        t = self.tables[table]
        return tuple(t.column(n).to_numpy() for n in names)

    def samples(self, kind: str, width: int) -> tuple[np.ndarray, ...]:
        """(feature, sub, key, idx, value, windows [n, width]) of one reservoir kind."""
        t = self.tables["samples"]
        t = t.filter(pc.equal(t.column("kind"), kind))
        acts = t.column("acts")
        if t.num_rows and not pc.all(pc.equal(pc.list_value_length(acts), width)).as_py():
            raise DimensionError(f"harvest partial has {kind} windows that are not {width} wide "
                                 "(was [harvest] window changed?)")
        windows = pc.list_flatten(acts).to_numpy(zero_copy_only=False).reshape(-1, width)
        feature, sub, key, idx, value = (t.column(n).to_numpy() for n in ("feature", "sub", "key", "idx", "value"))
        return feature, sub, key, idx, value, windows


def partial_from_state(state: dict, n_sub_bins: int) -> HarvestPartial:
    """The long-format tables of a `Harvester.state_dict()`; `n_sub_bins` interval sub-bins per feature."""
    count = state["count"]
    fired = np.flatnonzero(count > 0)
    tables = {
        "features": _table("features", fired, count[fired], state["max"][fired], state["exp"][fired]),
        "sums": _table("sums", *_nonzero(state["mant"])),
        "hist": _table("hist", *_nonzero(state["hist"])),
        "samples": pa.concat_tables([
            _samples(state, kind, prefix, n_sub_bins if kind == "interval" else 1)
            for kind, prefix in SAMPLE_KINDS.items()
        ]),
    }
    tables.update(_coact_tables(state, len(count)))
    return HarvestPartial(
        n_features=len(count), n_tokens=int(state["n_tokens"]),
        slots={kind: state[f"{prefix}.key"].shape[1] for kind, prefix in SAMPLE_KINDS.items()},
        coact_capacity=state["coact.partner"].shape[1] if "coact.partner" in state else 0, tables=tables,
    )


def _table(name: str, *columns: np.ndarray) -> pa.Table:
    schema = SCHEMAS[name]
    arrays = [pa.array(np.asarray(c), type=f.type) if not isinstance(c, pa.Array) else c
              for c, f in zip(columns, schema)]
    return pa.Table.from_arrays(arrays, schema=schema)


def _nonzero(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(matrix)
    return rows, cols, matrix[rows, cols]


def _samples(state: dict, kind: str, prefix: str, per_feature: int) -> pa.Table:
    slot, place = np.nonzero(state[f"{prefix}.index"] != INDEX_EMPTY)
    feature, sub = np.divmod(slot, per_feature)
    windows = state[f"{prefix}.window"][slot, place]
    width = windows.shape[1]
    offsets = np.arange(len(slot) + 1, dtype=np.int32) * width
    acts = pa.ListArray.from_arrays(pa.array(offsets), pa.array(windows.reshape(-1), pa.float32()))
    return _table("samples", pa.array(np.full(len(slot), kind)), feature, sub, state[f"{prefix}.key"][slot, place],
                  state[f"{prefix}.index"][slot, place], state[f"{prefix}.value"][slot, place], acts)


def _coact_tables(state: dict, n: int) -> dict[str, pa.Table]:
    empty = {name: SCHEMAS[name].empty_table() for name in ("coact_pairs", "coact_summary", "coact_err")}
    if "coact.dense" in state:
        return {**empty, "coact_pairs": _table("coact_pairs", *_dense_pairs(state["coact.dense"], n))}
    partner, count = state["coact.partner"], state["coact.count"]
    rows, places = np.nonzero(partner >= 0)
    err_rows = np.flatnonzero(state["coact.err"])
    return {**empty,
            "coact_summary": _table("coact_summary", rows, partner[rows, places], count[rows, places]),
            "coact_err": _table("coact_err", err_rows, state["coact.err"][err_rows])}


def _dense_pairs(flat: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nonzero (lo, hi, count) of the upper-triangle accumulator, leaving out its padding row and column."""
    square = flat.reshape(n + 1, n + 1)
    parts = []
    for r0 in range(0, n, _PAIR_ROWS):
        block = square[r0 : min(n, r0 + _PAIR_ROWS), :n]
        lo, hi = np.nonzero(block)
        parts.append((lo + r0, hi, block[lo, hi].astype(np.int64)))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return tuple(np.concatenate(p) for p in zip(*parts))


def load_coact(coact: DenseCoact | SparseCoact, partial: HarvestPartial) -> None:
    """Fill an empty co-activation accumulator from a partial's tables."""
    if isinstance(coact, DenseCoact):
        coact.n_tokens = partial.n_tokens
        lo, hi, n = partial.columns("coact_pairs", "lo", "hi", "n")
        # As in DenseCoact: past 2**31 tokens a count may not fit int32.
        if coact.flat.dtype == np.int32 and partial.n_tokens >= np.iinfo(np.int32).max:
            coact.load({"coact.dense": np.zeros(coact.flat.size, np.int64), "coact.tokens": partial.n_tokens})
        coact.flat[lo.astype(np.int64) * coact.stride + hi] = n
        return
    feature, partner, n = partial.columns("coact_summary", "feature", "partner", "n")
    # Places within a row are kept in (-count, partner) order, the order the summary itself maintains.
    order = np.lexsort((partner, -n, feature))
    feature, partner, n = feature[order], partner[order], n[order]
    place = rank_in_groups(feature)
    coact.partner[feature, place] = partner
    coact.count[feature, place] = n
    rows, err = partial.columns("coact_err", "feature", "err")
    coact.err[rows] = err


def check_layout(partial: HarvestPartial, n_features: int, slots: dict[str, int], coact_capacity: int) -> None:
    """Raise unless the partial was harvested with this many features, reservoir sizes and co-activation kind."""
    if (partial.n_features, partial.slots, partial.coact_capacity) != (n_features, slots, coact_capacity):
        raise DimensionError(
            f"harvest partial has {partial.n_features} features, reservoirs {partial.slots} and co-activation "
            f"capacity {partial.coact_capacity}; this harvest has {n_features}, {slots} and {coact_capacity} "
            "(was the [harvest] config changed?)"
        )
