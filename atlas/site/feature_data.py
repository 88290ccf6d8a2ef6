"""What the feature pages of one range of features take from the store: their example runs and scripts, their
histograms, and the per-feature rows of the other large tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from markupsafe import Markup

from atlas.site.charts import histogram_svg
from atlas.site.model import SiteModel
from atlas.site.tokens import ExampleScripts, example_scripts
from atlas.store.reads import ExampleBlock

# The kinds of example a feature page shows, each in a section of its own; any other kind counts as random.
SECTION_KINDS = ("top", "interval", "random")


class ExampleRuns(NamedTuple):
    """The rows of an example block that a page shows as one group (same feature, section and interval
    bucket) lie next to each other: where each run of them ends, and each run's key and length."""

    ends: np.ndarray  # bool per row: the run ends here
    keys: list[tuple[int, str, int]]  # feature, section kind, bucket (0 outside intervals)
    lengths: list[int]


def example_runs(ex: ExampleBlock) -> ExampleRuns:
    section = [k if k in SECTION_KINDS else "random" for k in ex.kind]
    keys = list(zip(ex.feature.tolist(), section,
                    [b if k == "interval" else 0 for k, b in zip(section, ex.bucket.tolist())]))
    ends = np.ones(len(keys), dtype=bool)
    ends[:-1] = [a != b for a, b in zip(keys, keys[1:])]
    last = np.flatnonzero(ends)
    return ExampleRuns(ends, [keys[i] for i in last.tolist()], np.diff(last, prepend=-1).tolist())


class FeatureHtml(NamedTuple):
    """What a block of features' pages show that comes from the store alone, not from the templates or the
    rest of the site: what the feature cache keeps beside the page contexts (cache.py)."""

    run_keys: list[tuple[int, str, int]]  # of the example runs, as in ExampleRuns
    run_lengths: list[int]
    examples: ExampleScripts  # each feature's example script
    histograms: dict[int, Markup]  # alive feature -> its histogram


def feature_html(model: SiteModel, ex: ExampleBlock, histograms: dict[int, list[tuple]], lo: int, hi: int,
                 short_window: int) -> FeatureHtml:
    runs = example_runs(ex)
    html = example_scripts(ex, model.max_act[ex.feature], model.tokens, short_window, runs.ends, lo, hi)
    charts = {n: histogram_svg(histograms.get(n, []), float(model.max_act[n])) for n in range(lo, hi) if model.alive[n]}
    return FeatureHtml(runs.keys, runs.lengths, html, charts)


@dataclass
class FeatureData:
    """What the feature pages of one feature range need beyond the model: their example scripts and
    histograms, and the per-feature rows of the other large tables."""

    html: FeatureHtml
    intervals: dict[int, list[tuple]]
    neighbours: dict[int, list[tuple]]
    logits: dict[int, list[tuple]]
    steering: dict[int, list[tuple]] = field(default_factory=dict)

    def __post_init__(self):
        self._runs_of: dict[int, list[tuple[str, int, int, int]]] = {}
        for (feature, section, bucket), n in zip(self.html.run_keys, self.html.run_lengths):
            runs = self._runs_of.setdefault(feature, [])
            runs.append((section, bucket, len(runs), n))

    def example_groups(self, n: int) -> dict[str, dict[int, list[tuple[int, int]]]]:
        """Feature n's runs of examples (index in its script, length) by section kind, then by interval
        bucket."""
        out: dict[str, dict[int, list[tuple[int, int]]]] = {}
        for section, bucket, k, length in self._runs_of.get(n, ()):
            out.setdefault(section, {}).setdefault(bucket, []).append((k, length))
        return out
