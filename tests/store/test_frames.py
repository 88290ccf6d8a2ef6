"""The harvest's arrays as the store's frames."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from atlas.config import HarvestSection
from atlas.harvest import Harvester
from atlas.store.frames import examples_table


def test_example_windows_use_64_bit_offsets_and_keep_each_sequence_apart():
    # Past ~800k features the windows of all examples hold more than 2**31 elements; 32-bit offsets would wrap.
    rng = np.random.default_rng(0)
    n_tokens, n_features, window = 400, 8, 3
    seq_starts = np.array([0, 150, 400], dtype=np.int64)
    acts = torch.from_numpy(np.maximum(rng.normal(size=(n_tokens, n_features)), 0).astype(np.float32))
    cfg = HarvestSection(top_k=4, window=window, n_intervals=2, per_interval=2, n_random=2)
    h = Harvester(n_features, cfg, seed=0)
    seq_id = np.repeat(np.arange(2), np.diff(seq_starts))
    h.update(acts, np.arange(n_tokens, dtype=np.int64), seq_id)
    tokens = np.arange(n_tokens, dtype=np.int64) + 1000
    table = examples_table(h.finalize(), tokens, seq_starts, window)
    assert pa.types.is_large_list(table.schema.field("token_ids").type)
    assert pa.types.is_large_list(table.schema.field("acts").type)
    rows = table.to_pandas()
    assert len(rows) > 0
    for r in rows.itertuples():
        ids = np.asarray(r.token_ids) - 1000
        start = int(seq_starts[r.seq])
        assert ids[r.focus] == start + r.pos  # the focus token is the one that fired
        assert ids.min() >= start and ids.max() < seq_starts[r.seq + 1]  # never across a sequence boundary
        assert len(ids) <= 2 * window + 1
