"""The store: one DuckDB file holding every computed fact. The only package that imports duckdb."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from atlas.store.schema import TABLES, create_statements


class Store:
    """A DuckDB file with the atlas schema; writes whole frames, reads frames or JSON facts."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise FileNotFoundError(self.path)
        self.con = duckdb.connect(str(self.path), read_only=read_only)
        if not read_only:
            for ddl in create_statements():
                self.con.execute(ddl)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- writes -------------------------------------------------------------------------
    def replace_table(self, name: str, frame) -> None:
        """Replace all rows of `name` with a pandas frame or Arrow table (columns matched by name, one insert)."""
        self.replace_where(name, "true", frame)

    def replace_where(self, name: str, condition: str, frame) -> None:
        """Delete the rows of `name` matching `condition`, then insert `frame`, in one transaction."""
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}")
        cols = list(frame.column_names) if hasattr(frame, "column_names") else list(frame.columns)
        collist = ", ".join(cols)
        self.con.execute("BEGIN")
        try:
            self.con.execute(f"DELETE FROM {name} WHERE {condition}")
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
        frame = pd.DataFrame(
            {"key": list(facts), "value": [json.dumps(v, sort_keys=True) for v in facts.values()]}
        )
        self.con.register("_facts", frame)
        self.con.execute(
            "INSERT OR REPLACE INTO atlas_info SELECT key, value FROM _facts"
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

    def export_parquet(self, folder: Path) -> list[Path]:
        """Write every table to FOLDER/<table>.parquet."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for name in TABLES:
            path = folder / f"{name}.parquet"
            escaped = str(path).replace("'", "''")
            self.con.execute(f"COPY (SELECT * FROM {name}) TO '{escaped}' (FORMAT parquet)").fetchall()
            out.append(path)
        return out

    # ---- stage bookkeeping --------------------------------------------------------------
    def stage_hash(self, stage: str) -> str | None:
        rows = self.con.execute("SELECT input_hash FROM stages WHERE stage = ?", [stage]).fetchall()
        return rows[0][0] if rows else None

    def record_stage(self, stage: str, input_hash: str, seconds: float, details: dict | None = None) -> None:
        self.con.execute(
            "INSERT OR REPLACE INTO stages VALUES (?, ?, ?, now(), ?)",
            [stage, input_hash, seconds, json.dumps(details or {}, sort_keys=True)],
        ).fetchall()
