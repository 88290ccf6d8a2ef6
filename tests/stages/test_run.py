"""The one reuse path of keyed stages: declared inputs make the key, a recorded key skips the work, and a stage that
declares no inputs or no revision is refused."""

from __future__ import annotations

import pytest

from atlas.stages.run import (STAGE_REVISIONS, BuildReport, Done, Keyed, Outcome, Reporter, Status, StoreLedger,
                              input_key, run_keyed)
from atlas.store import Store


class Calls:
    def __init__(self):
        self.computed, self.reused, self.tidied = [], [], []

    def stage(self, store: Store, inputs: dict, **extra) -> Keyed:
        def compute(key: str) -> Outcome[str]:
            self.computed.append(key)
            return Outcome(f"value {len(self.computed)}", "worked", {"rows": 3})

        def reuse(key: str) -> Outcome[str]:
            self.reused.append(key)
            return Outcome("kept", "")

        return Keyed("harvest", inputs, StoreLedger(store), compute, reuse, tidy=self.tidied.append, **extra)


def test_a_recorded_key_is_reused_and_a_changed_input_computes_again(tmp_path):
    lines = []
    report = Reporter(lines.append, progress=False)
    calls = Calls()
    with Store(tmp_path / "a.duckdb") as store:
        first = run_keyed(calls.stage(store, {"sae": "abc", "seed": 0}), report)
        assert first.key == input_key("abc", 0, STAGE_REVISIONS["harvest"])
        assert first.value == "value 1" and calls.computed == [first.key] and calls.tidied == [first.key]
        assert store.stage_hash("harvest") == first.key

        again = run_keyed(calls.stage(store, {"sae": "abc", "seed": 0}), report)
        assert again == Done(first.key, "kept") and calls.computed == [first.key]
        assert calls.reused == [first.key] and calls.tidied == [first.key, first.key]

        changed = run_keyed(calls.stage(store, {"sae": "abc", "seed": 1}), report)
        assert changed.key != first.key and calls.computed == [first.key, changed.key]
        assert store.stage_hash("harvest") == changed.key
    assert [(s.name, s.status) for s in report.report.stages] == [
        ("harvest", Status.COMPUTED), ("harvest", Status.REUSED), ("harvest", Status.COMPUTED)]
    assert lines[0].split()[:2] == ["harvest", "computed"] and lines[0].endswith("worked")
    assert lines[1].split()[:2] == ["harvest", "reused"]


def test_a_version_reports_its_stages_by_slug_into_the_same_report():
    report = Reporter(lambda line: None, progress=False, report=BuildReport())
    version = report.for_version("second-run")
    version.stage("harvest", Status.REUSED, 0.0)
    version.warn("poor fit")
    assert [s.name for s in report.report.stages] == ["harvest@second-run"]
    assert report.warnings == ["poor fit"] and report.report.stages[0].status == "reused"


def test_an_outcome_that_is_not_computed_is_reported_as_it_is_and_not_recorded(tmp_path):
    report = Reporter(lambda line: None, progress=False)
    with Store(tmp_path / "a.duckdb") as store:
        stage = Keyed("activations", {"tokens": "t"}, StoreLedger(store),
                      lambda key: Outcome(None, "too large", status=Status.SKIPPED))
        assert run_keyed(stage, report).value is None
        assert store.stage_hash("activations") is None
    assert report.report.stages[0].status == Status.SKIPPED


def test_a_stage_without_inputs_or_revision_is_refused(tmp_path):
    report = Reporter(lambda line: None, progress=False)
    calls = Calls()
    with Store(tmp_path / "a.duckdb") as store:
        with pytest.raises(ValueError, match="declares no inputs"):
            run_keyed(calls.stage(store, {}), report)
        unnamed = Keyed("explanations", {"sae": "abc"}, StoreLedger(store), lambda key: Outcome())
        with pytest.raises(ValueError, match="STAGE_REVISIONS"):
            run_keyed(unnamed, report)
        assert calls.computed == [] and store.stage_hash("harvest") is None
