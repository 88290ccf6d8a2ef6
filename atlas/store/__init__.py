"""The store: one DuckDB file holding every computed fact. The only package that imports duckdb."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from atlas.store.schema import TABLES, create_statements, primary_key

if TYPE_CHECKING:  # imported where used: `atlas inspect` and `atlas search` start without pandas
    import numpy as np
    import pandas as pd


MAIN = "main"


def fixed_build_time() -> float | None:
    """SOURCE_DATE_EPOCH (the reproducible-builds convention), when set: the build time to record instead of
    the clock. Durations are then not recorded either, so the same inputs give a byte-identical store."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    try:
        return float(value) if value else None
    except ValueError:
        return None


def without_durations(facts: dict[str, Any]) -> dict[str, Any]:
    """`facts` minus its durations (keys ending in `_s`) when the build time is fixed."""
    if fixed_build_time() is None:
        return facts
    return {k: v for k, v in facts.items() if not k.endswith("_s")}


class Store:
    """A DuckDB file with the atlas schema; writes whole frames, reads frames or JSON facts.

    An atlas holding several SAE versions keeps each extra version's tables in a DuckDB schema of its own
    (`schema`), with the same table names; the main SAE's tables are in `main`. One file either way.
    """

    def __init__(self, path: str | Path, read_only: bool = False, schema: str = MAIN):
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise FileNotFoundError(self.path)
        self.read_only = read_only
        self.con = duckdb.connect(str(self.path), read_only=read_only)
        self._enter_schema(schema)

    def _enter_schema(self, schema: str) -> None:
        self.schema = schema
        if schema != MAIN:
            if not self.read_only:
                self.con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            elif schema not in self.schemas():
                raise KeyError(f"{self.path} holds no version schema {schema!r}")
            self.con.execute(f"SET schema = '{schema}'")
        if not self.read_only:
            for ddl in create_statements():
                self.con.execute(ddl)

    def in_schema(self, schema: str) -> "Store":
        """The same file seen through another version's schema (shares this connection's database)."""
        view = object.__new__(Store)
        view.path, view.read_only = self.path, self.read_only
        view.con = self.con.cursor()
        view._enter_schema(schema)
        return view

    def schemas(self) -> list[str]:
        """Every schema in the file that holds an atlas (main first)."""
        rows = self.con.execute("SELECT DISTINCT table_schema FROM information_schema.tables "
                                "WHERE table_name = 'atlas_info'").fetchall()
        names = sorted(r[0] for r in rows)
        return sorted(names, key=lambda n: n != MAIN)

    def drop_schema(self, schema: str) -> None:
        if schema != MAIN:
            self.con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- writes -------------------------------------------------------------------------
    def replace_table(self, name: str, frame) -> None:
        """Replace all rows of `name` with a pandas frame or Arrow table (columns matched by name, one insert)."""
        self._replace("DELETE FROM " + self._known(name), [], name, frame)

    def replace_rows(self, name: str, frame, **where: Any) -> None:
        """Replace the rows of `name` whose columns equal `where` (e.g. kind="coact") with `frame`, in one
        transaction."""
        if not where:
            raise ValueError(f"replace_rows({name!r}) needs the columns that pick the rows to replace")
        condition = " AND ".join(f"{column} = ?" for column in where)
        self._replace(f"DELETE FROM {self._known(name)} WHERE {condition}", list(where.values()), name, frame)

    def append_rows(self, name: str, frame) -> None:
        """Add the rows of `frame` to `name`."""
        self._replace("", [], self._known(name), frame)

    def clear(self, name: str) -> None:
        """Remove every row of `name`."""
        self.con.execute(f"DELETE FROM {self._known(name)}").fetchall()

    @staticmethod
    def _known(name: str) -> str:
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}")
        return name

    def _replace(self, delete: str, params: list, name: str, frame) -> None:
        cols = list(frame.column_names) if hasattr(frame, "column_names") else list(frame.columns)
        collist = ", ".join(cols)
        self.con.execute("BEGIN")
        try:
            if delete:
                self.con.execute(delete, params)
            if len(frame):
                self.con.register("_incoming", frame)
                self.con.execute(f"INSERT INTO {name} ({collist}) SELECT {collist} FROM _incoming")
                self.con.unregister("_incoming")
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise

    def set_info(self, **facts: Any) -> None:
        """Record JSON-serialisable facts in atlas_info (overwriting keys given)."""
        if not facts:
            return
        import pandas as pd

        frame = pd.DataFrame(
            {"key": list(facts), "value": [json.dumps(v, sort_keys=True) for v in facts.values()]}
        )
        self.con.register("_facts", frame)
        self.con.execute(
            "INSERT OR REPLACE INTO atlas_info SELECT key, value FROM _facts ORDER BY key"
        )
        self.con.unregister("_facts")

    # ---- reads --------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        rows = self.con.execute("SELECT key, value FROM atlas_info ORDER BY key").fetchall()
        return {k: json.loads(v) for k, v in rows}

    def table(self, name: str, order_by: str | None = None) -> pd.DataFrame:
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}")
        sql = f"SELECT * FROM {name}"
        if order_by:
            sql += f" ORDER BY {order_by}"
        return self.con.execute(sql).df()

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        return self.con.execute(sql, params or []).df()

    def count(self, name: str) -> int:
        return self.con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]

    def vocab_ids(self) -> np.ndarray:
        """Every token id the vocab table holds (in no particular order)."""
        return self.con.execute("SELECT token_id FROM vocab").df()["token_id"].to_numpy()

    def example_token_ids(self) -> np.ndarray:
        """Every token id that appears in a stored example (each once, in no particular order)."""
        return self.con.execute("SELECT DISTINCT unnest(token_ids) AS t FROM examples").df()["t"].to_numpy()

    def examples_of_kinds(self, kinds: tuple[str, ...]) -> pd.DataFrame:
        """(feature, kind, token_ids, focus, value) of the examples of the given kinds, by feature, kind, bucket
        and rank."""
        marks = ", ".join("?" for _ in kinds)
        return self.con.execute(f"SELECT feature, kind, token_ids, focus, value FROM examples WHERE kind IN ({marks}) "
                                "ORDER BY feature, kind, bucket, rank", list(kinds)).df()

    def feature_labels(self, features: list[int]) -> dict[int, str]:
        """The labels of the listed features that have one."""
        if not features:
            return {}
        marks = ", ".join("?" for _ in features)
        rows = self.con.execute(f"SELECT feature, label FROM features WHERE feature IN ({marks}) "
                                "AND label IS NOT NULL", [int(f) for f in features]).fetchall()
        return {int(f): str(label) for f, label in rows}

    def feature_states(self) -> pd.DataFrame:
        """(feature, alive, label) of every feature, in feature order."""
        return self.con.execute("SELECT feature, alive, label FROM features ORDER BY feature").df()

    def alive_features(self) -> np.ndarray:
        """The features that fired, ascending."""
        return self.con.execute("SELECT feature FROM features WHERE alive ORDER BY feature").df()["feature"].to_numpy()

    def cluster_centres(self) -> pd.DataFrame:
        """(cluster_id, cx, cy): the mean map position of each cluster's member features."""
        return self.con.execute("SELECT m.cluster_id, avg(f.x) AS cx, avg(f.y) AS cy FROM cluster_members m "
                                "JOIN features f USING (feature) GROUP BY m.cluster_id").df()

    def export_parquet(self, folder: Path) -> list[Path]:
        """Write every table to FOLDER/<table>.parquet."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for name in TABLES:
            path = folder / f"{name}.parquet"
            escaped = str(path).replace("'", "''")
            # Keyed tables are updated in place, so their stored row order depends on history; sort them.
            key = primary_key(name)
            order = f" ORDER BY {key}" if key else ""
            self.con.execute(f"COPY (SELECT * FROM {name}{order}) TO '{escaped}' (FORMAT parquet)").fetchall()
            out.append(path)
        return out

    # ---- stage bookkeeping --------------------------------------------------------------
    def stage_hash(self, stage: str) -> str | None:
        rows = self.con.execute("SELECT input_hash FROM stages WHERE stage = ?", [stage]).fetchall()
        return rows[0][0] if rows else None

    def forget_stage(self, stage: str) -> None:
        """Drop a stage's record, so nothing is reused from it."""
        self.con.execute("DELETE FROM stages WHERE stage = ?", [stage]).fetchall()

    def record_run(self, started: float, config: dict, config_hash: str, atlas_version: str,
                   library_versions: dict) -> None:
        """Replace the runs table's one row: when this build started and finished, its config and software.

        With a fixed build time (SOURCE_DATE_EPOCH) both times are that time."""
        fixed = fixed_build_time()
        self.con.execute("DELETE FROM runs").fetchall()
        self.con.execute(
            "INSERT INTO runs VALUES (1, to_timestamp(?), coalesce(to_timestamp(?), now()), ?, ?, ?, ?)",
            [started if fixed is None else fixed, fixed, json.dumps(config, sort_keys=True), config_hash,
             atlas_version, json.dumps(library_versions, sort_keys=True)],
        ).fetchall()

    def record_stage(self, stage: str, input_hash: str, seconds: float, details: dict | None = None) -> None:
        fixed = fixed_build_time()
        self.con.execute(
            "INSERT OR REPLACE INTO stages VALUES (?, ?, ?, coalesce(to_timestamp(?), now()), ?)",
            [stage, input_hash, 0.0 if fixed is not None else seconds, fixed,
             json.dumps(without_durations(details or {}), sort_keys=True)],
        ).fetchall()
