"""How a stage runs: its key, its status, the lines it reports, and the one path by which a keyed stage is reused
or computed and recorded."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from atlas.config import Config
    from atlas.saes import SaeWeights
    from atlas.store import Store
    from atlas.store.records import SaeVersion

# Bumped when a stage's code changes what it computes, so old results are not reused. A keyed stage that is not
# listed here cannot run.
STAGE_REVISIONS = {"tokens": 1, "activations": 1, "harvest": 1, "logits": 1, "analysis": 2, "compare": 1,
                   "shared-layout": 1, "explain": 1, "site": 1}

T = TypeVar("T")


def input_key(*parts) -> str:
    """A short stable hash of a stage's inputs (JSON of the parts, paths and other objects as their text)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Status(StrEnum):
    """What a stage did this build; printed as its word."""

    COMPUTED = "computed"
    REUSED = "reused"
    LOADED = "loaded"  # the model, read from its folder
    READ = "read"  # precomputed inputs, taken as they are
    SKIPPED = "skipped"  # not done, for a reason the note gives
    READY = "ready"  # inputs put in place (the demo's)
    PARTIAL = "partial"  # done in part (a budget ran out): not recorded, so the next build carries on


@dataclass
class StageReport:
    name: str
    status: Status
    seconds: float
    note: str = ""


@dataclass
class BuildReport:
    stages: list[StageReport] = field(default_factory=list)
    store: Path | None = None
    site: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def times(self) -> dict[str, float]:
        return {s.name: round(s.seconds, 2) for s in self.stages}


class Reporter:
    """Where stages report: one line per stage, warnings, progress bars. A version's reporter names its stages
    `<stage>@<slug>` and adds to the same build report."""

    def __init__(self, log: Callable[[str], Any] = print, progress: bool | None = None,
                 report: BuildReport | None = None, suffix: str = ""):
        self.log = log
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.report = BuildReport() if report is None else report
        self.suffix = suffix

    def for_version(self, slug: str) -> "Reporter":
        return Reporter(self.log, self.progress, self.report, f"@{slug}")

    @property
    def warnings(self) -> list[str]:
        """Every warning of the build so far, its versions' included."""
        return self.report.warnings

    def times(self) -> dict[str, float]:
        return self.report.times()

    def finish(self, store: Path, site: Path) -> BuildReport:
        """The build's report, with where its store and site are."""
        self.report.store, self.report.site = store, site
        return self.report

    def stage(self, name: str, status: Status, t0: float, note: str = "") -> None:
        """Report a finished stage that started at `t0` (time.perf_counter)."""
        rep = StageReport(name + self.suffix, Status(status), time.perf_counter() - t0, note)
        self.report.stages.append(rep)
        self.log(f"  {rep.name:<12} {rep.status:<8} {rep.seconds:7.1f} s  {note}".rstrip())

    def warn(self, msg: str) -> None:
        self.report.warnings.append(msg)
        self.log(f"WARNING: {msg}")

    def bar(self, total: int, desc: str):
        """A tqdm bar over `total` tokens, shown only when progress is on."""
        from tqdm import tqdm

        return tqdm(total=total, desc=f"  {desc}", unit="tok", unit_scale=True, disable=not self.progress,
                    leave=False, dynamic_ncols=True)


@dataclass(frozen=True)
class VersionRun:
    """Where one SAE version's stages write: its config, its store schema, its report lines and its site folder.

    The main SAE is a version too (schema main, site root); the inputs all versions share are `SharedInputs`."""

    cfg: Config
    entry: SaeVersion
    store: Store
    report: Reporter
    site_dir: Path


@dataclass(frozen=True)
class SaeResult:
    """What one version's SAE stages leave for the stages after them: the SAE as fitted and the stages' keys."""

    sae: SaeWeights
    recon: dict
    harvest_key: str
    analysis_key: str
    compare_key: str
    explain_key: str = ""

    def digest(self) -> str:
        """Changes when anything this version's pages show would change."""
        return input_key(self.harvest_key, self.analysis_key, self.compare_key, self.explain_key)


# ---- reuse ------------------------------------------------------------------------------------------------------
class Ledger(Protocol):
    """Where a keyed stage's results are known by their key."""

    def recorded(self, stage: str, key: str) -> bool: ...

    def record(self, stage: str, key: str, seconds: float, details: dict) -> None: ...


class StoreLedger:
    """The store's `stages` table: a stage whose key is recorded there has its tables in the store."""

    def __init__(self, store: Store):
        self.store = store

    def recorded(self, stage: str, key: str) -> bool:
        return self.store.stage_hash(stage) == key

    def record(self, stage: str, key: str, seconds: float, details: dict) -> None:
        self.store.record_stage(stage, key, seconds, details)


class CacheLedger:
    """Files in the cache folder named by their key: the file is the record (written whole by the stage)."""

    def __init__(self, exists: Callable[[str], bool]):
        self.exists = exists

    def recorded(self, stage: str, key: str) -> bool:
        return self.exists(key)

    def record(self, stage: str, key: str, seconds: float, details: dict) -> None:
        pass


class OwnLedger:
    """An output that keeps its own key (the site's marker): the stage decides reuse and says so in its outcome."""

    def recorded(self, stage: str, key: str) -> bool:
        return False

    def record(self, stage: str, key: str, seconds: float, details: dict) -> None:
        pass


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What a keyed stage's computation (or reuse) gives back: its value, its report note, details to record."""

    value: T = None
    note: str = ""
    details: dict | None = None
    status: Status = Status.COMPUTED  # anything but COMPUTED is reported as it is and not recorded


def _nothing(key: str) -> Outcome:
    return Outcome(status=Status.REUSED)


@dataclass(frozen=True)
class Keyed(Generic[T]):
    """A stage whose result is kept and reused by the hash of its declared inputs.

    `inputs` names every input the result depends on (their values, in order, make the key with the stage's
    revision); `compute(key)` writes the result and returns its outcome; `reuse(key)` gives the outcome of a
    recorded result; `tidy(key)` runs once the result is recorded or reused (it removes what only an unfinished
    run needs). A stage module builds its `Keyed` and hands it to `run_keyed`, the only caller of `compute`.
    """

    name: str
    inputs: dict[str, Any]
    ledger: Ledger
    compute: Callable[[str], Outcome[T]]
    reuse: Callable[[str], Outcome[T]] = _nothing
    tidy: Callable[[str], None] | None = None

    def key(self) -> str:
        if self.name not in STAGE_REVISIONS:
            raise ValueError(f"stage {self.name!r} has no revision: add it to STAGE_REVISIONS")
        if not self.inputs:
            raise ValueError(f"stage {self.name!r} declares no inputs, so its results could never be told apart")
        return input_key(*self.inputs.values(), STAGE_REVISIONS[self.name])


@dataclass(frozen=True)
class Done(Generic[T]):
    """A keyed stage's key and the value its computation or reuse gave."""

    key: str
    value: T


def run_keyed(stage: Keyed[T], report: Reporter) -> Done[T]:
    """Reuse the stage's result when its inputs' key is recorded, else compute it, record the key and report."""
    key = stage.key()
    t0 = time.perf_counter()
    if stage.ledger.recorded(stage.name, key):
        out = stage.reuse(key)
        status = Status.REUSED if out.status == Status.COMPUTED else out.status
    else:
        out = stage.compute(key)
        status = out.status
        if status == Status.COMPUTED:
            stage.ledger.record(stage.name, key, time.perf_counter() - t0, out.details or {})
    if stage.tidy is not None and status in (Status.COMPUTED, Status.REUSED):
        stage.tidy(key)
    report.stage(stage.name, status, t0, out.note)
    return Done(key, out.value)
