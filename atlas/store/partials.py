"""Shard partials of the harvest, kept in the store until they are merged exactly in SQL.

The `harvest_partial_*` tables exist only while a sharded harvest runs; they are not part of the documented
schema. Each shard's rows carry its shard id, and writing a shard again replaces it, so a rerun after a crash
never counts a shard twice. The merge is the SQL form of `Harvester.merge`: counts and exact sum parts add up,
each feature's grid is the coarsest any shard reached (the largest exponent), histogram bins and interval
sub-bins move onto it by a right shift, reservoirs keep the bottom m by (key, token index), and dense
co-activation pair counts add up.
"""

from __future__ import annotations

import pyarrow as pa

from atlas.errors import DimensionError
from atlas.harvest.partials import SCHEMAS, HarvestPartial
from atlas.store import Store

PREFIX = "harvest_partial_"

# DuckDB's name for each Arrow type the partial tables use.
_SQL_TYPES: dict[pa.DataType, str] = {
    pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE", pa.string(): "TEXT",
}


def _sql_type(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return _sql_type(t.value_type) + "[]"
    return _SQL_TYPES[t]


# The columns of atlas/harvest/partials.py SCHEMAS in SQL; each table is led by the shard id.
_COLUMNS: dict[str, str] = {
    name: ", ".join(f"{f.name} {_sql_type(f.type)}" for f in schema) for name, schema in SCHEMAS.items()
}
# One row per finished shard, written in the same transaction as its rows.
_SHARDS_COLUMNS = ("shard INTEGER PRIMARY KEY, run_key TEXT, n_features BIGINT, n_tokens BIGINT, m_top INTEGER, "
                   "m_interval INTEGER, m_random INTEGER, coact_capacity INTEGER")

# Per shard and feature, how far the shard's grid is from the merged one (capped as `coarsen_counts` caps it).
_GRID_SHIFT = f"""
    SELECT p.shard, p.feature, LEAST(g.exp - p.exp, 62) AS shift
    FROM {PREFIX}features p
    JOIN (SELECT feature, max(exp) AS exp FROM {PREFIX}features GROUP BY feature) g USING (feature)
"""

_MERGE_SQL: dict[str, str] = {
    "features": f"""
        SELECT feature, sum(count)::BIGINT AS count, max(max) AS max, max(exp) AS exp
        FROM {PREFIX}features GROUP BY feature""",
    "sums": f"""
        SELECT feature, expo, sum(mant)::BIGINT AS mant
        FROM {PREFIX}sums GROUP BY feature, expo""",
    "hist": f"""
        WITH grid AS ({_GRID_SHIFT}),
        moved AS (SELECT h.feature, h.bin >> g.shift AS bin, h.n
                  FROM {PREFIX}hist h JOIN grid g USING (shard, feature))
        SELECT feature, bin, sum(n)::BIGINT AS n FROM moved GROUP BY feature, bin""",
    # Top and random samples have sub 0, which no shift moves.
    "samples": f"""
        WITH grid AS ({_GRID_SHIFT}),
        moved AS (SELECT s.kind, s.feature, s.sub >> g.shift AS sub, s.key, s.idx, s.value, s.acts
                  FROM {PREFIX}samples s JOIN grid g USING (shard, feature))
        SELECT * FROM moved
        QUALIFY row_number() OVER (PARTITION BY kind, feature, sub ORDER BY key, idx)
            <= CASE kind WHEN 'top' THEN $m_top WHEN 'interval' THEN $m_interval ELSE $m_random END""",
    "coact_pairs": f"""
        SELECT lo, hi, sum(n)::BIGINT AS n FROM {PREFIX}coact_pairs GROUP BY lo, hi""",
}

# One Misra-Gries merge step (Agarwal et al. 2012), as `SparseCoact.merge` does it: add the counts of the running
# summary and the next shard's, subtract each feature's (capacity+1)-th largest count from all of its partners,
# keep at most `capacity` that stay positive, and add what was subtracted to the feature's error.
_MG_RANKED = f"""
    CREATE OR REPLACE TEMP TABLE _mg_ranked AS
    SELECT feature, partner, n, row_number() OVER (PARTITION BY feature ORDER BY n DESC, partner) AS r
    FROM (SELECT feature, partner, sum(n)::BIGINT AS n
          FROM (SELECT feature, partner, n FROM _mg
                UNION ALL SELECT feature, partner, n FROM {PREFIX}coact_summary WHERE shard = $shard)
          GROUP BY feature, partner)
"""
_MG_CUT = "CREATE OR REPLACE TEMP TABLE _mg_cut AS SELECT feature, n AS cut FROM _mg_ranked WHERE r = $capacity + 1"
_MG_KEEP = """
    CREATE OR REPLACE TEMP TABLE _mg AS
    SELECT feature, partner, n - coalesce(cut, 0) AS n
    FROM _mg_ranked LEFT JOIN _mg_cut USING (feature)
    WHERE r <= $capacity AND n - coalesce(cut, 0) > 0
"""
_MG_ERR = f"""
    CREATE OR REPLACE TEMP TABLE _mg_err AS
    SELECT feature, sum(err)::BIGINT AS err
    FROM (SELECT feature, err FROM _mg_err
          UNION ALL SELECT feature, err FROM {PREFIX}coact_err WHERE shard = $shard
          UNION ALL SELECT feature, cut AS err FROM _mg_cut)
    GROUP BY feature
"""


class HarvestPartials:
    """The partial tables of one sharded harvest run (`run_key`) in a store.

    Opening them creates the tables, and discards partials left by any other run (another config, SAE, corpus
    or shard layout), so only shards of this run are ever merged.
    """

    def __init__(self, store: Store, run_key: str):
        self.con = store.con
        self.run_key = run_key
        self._create()
        others = self.con.execute(f"SELECT count(*) FROM {PREFIX}shards WHERE run_key <> ?", [run_key]).fetchall()
        if others[0][0]:
            drop_partials(store)
            self._create()

    def _create(self) -> None:
        self.con.execute(f"CREATE TABLE IF NOT EXISTS {PREFIX}shards ({_SHARDS_COLUMNS})").fetchall()
        for name, columns in _COLUMNS.items():
            self.con.execute(f"CREATE TABLE IF NOT EXISTS {PREFIX}{name} (shard INTEGER, {columns})").fetchall()

    def finished(self) -> list[int]:
        """The shards of this run whose partials are completely written, ascending."""
        rows = self.con.execute(f"SELECT shard FROM {PREFIX}shards ORDER BY shard").fetchall()
        return [r[0] for r in rows]

    def write(self, shard: int, partial: HarvestPartial) -> None:
        """Store one shard's partial in one transaction, replacing whatever that shard held before."""
        if set(partial.tables) != set(_COLUMNS):
            raise KeyError(f"a harvest partial has the tables {sorted(_COLUMNS)}, not {sorted(partial.tables)}")
        con = self.con
        con.execute("BEGIN").fetchall()
        try:
            for name in ("shards", *_COLUMNS):
                con.execute(f"DELETE FROM {PREFIX}{name} WHERE shard = ?", [shard]).fetchall()
            for name, table in partial.tables.items():
                self._insert(name, shard, table)
            con.execute(
                f"INSERT INTO {PREFIX}shards VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [shard, self.run_key, partial.n_features, partial.n_tokens, partial.slots["top"],
                 partial.slots["interval"], partial.slots["random"], partial.coact_capacity],
            ).fetchall()
            con.execute("COMMIT").fetchall()
        except BaseException:
            con.execute("ROLLBACK").fetchall()
            raise

    def _insert(self, name: str, shard: int, table: pa.Table) -> None:
        if not table.num_rows:
            return
        cols = ", ".join(SCHEMAS[name].names)
        self.con.register("_partial", table)
        try:
            self.con.execute(
                f"INSERT INTO {PREFIX}{name} (shard, {cols}) SELECT $shard, {cols} FROM _partial", {"shard": shard}
            ).fetchall()
        finally:
            self.con.unregister("_partial")

    def merge(self) -> HarvestPartial:
        """All finished shards merged into one partial, binned on the merged grids (rows in no particular order)."""
        layout = self.con.execute(
            f"SELECT DISTINCT n_features, m_top, m_interval, m_random, coact_capacity FROM {PREFIX}shards"
        ).fetchall()
        if len(layout) != 1:
            raise DimensionError(f"cannot merge harvest partials of {len(layout)} layouts; they must share one")
        n_features, m_top, m_interval, m_random, capacity = layout[0]
        n_tokens = self.con.execute(f"SELECT coalesce(sum(n_tokens), 0)::BIGINT FROM {PREFIX}shards").fetchall()
        m = {"m_top": m_top, "m_interval": m_interval, "m_random": m_random}
        tables = {
            name: self.con.sql(sql, params=m if "$m_top" in sql else None).to_arrow_table()
            for name, sql in _MERGE_SQL.items()
        }
        if capacity:
            tables["coact_summary"], tables["coact_err"] = self._merge_summaries(capacity)
        else:
            tables["coact_summary"] = SCHEMAS["coact_summary"].empty_table()
            tables["coact_err"] = SCHEMAS["coact_err"].empty_table()
        return HarvestPartial(
            n_features=int(n_features), n_tokens=int(n_tokens[0][0]),
            slots={"top": m_top, "interval": m_interval, "random": m_random}, coact_capacity=int(capacity),
            tables={name: t.cast(SCHEMAS[name]) for name, t in tables.items()},
        )

    def _merge_summaries(self, capacity: int) -> tuple[pa.Table, pa.Table]:
        """Fold the shards' Misra-Gries summaries in shard order, so the result equals `SparseCoact.merge` applied
        shard after shard (such a summary depends on the order of its merges, within its error bound)."""
        con = self.con
        first, *rest = self.finished()
        con.execute(f"CREATE OR REPLACE TEMP TABLE _mg AS SELECT feature, partner, n FROM {PREFIX}coact_summary "
                    "WHERE shard = $shard", {"shard": first}).fetchall()
        con.execute(f"CREATE OR REPLACE TEMP TABLE _mg_err AS SELECT feature, err FROM {PREFIX}coact_err "
                    "WHERE shard = $shard", {"shard": first}).fetchall()
        for shard in rest:
            con.execute(_MG_RANKED, {"shard": shard}).fetchall()
            con.execute(_MG_CUT, {"capacity": capacity}).fetchall()
            con.execute(_MG_KEEP, {"capacity": capacity}).fetchall()
            con.execute(_MG_ERR, {"shard": shard}).fetchall()
        summary = con.sql("SELECT feature, partner, n FROM _mg").to_arrow_table()
        err = con.sql("SELECT feature, err FROM _mg_err WHERE err <> 0").to_arrow_table()
        for name in ("_mg", "_mg_err", "_mg_ranked", "_mg_cut"):
            con.execute(f"DROP TABLE IF EXISTS {name}").fetchall()
        return summary, err


def drop_partials(store: Store) -> None:
    """Remove every harvest partial table (after the merged harvest is written, or to start over)."""
    for name in ("shards", *_COLUMNS):
        store.con.execute(f"DROP TABLE IF EXISTS {PREFIX}{name}").fetchall()
