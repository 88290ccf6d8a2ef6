"""Logit effects checked against the model's own modules: the final norm and the LM head, one decoder row at a time.

Any adapter will do (the tiny models here, a real model in an end-to-end test). Check with random or trained
decoder directions, not token embeddings: tied embeddings share a large mean component, so the embedding of a
token need not promote that token (SmolLM2's " bridge" ranks 17th on its own embedding's list).
"""

from __future__ import annotations

import torch


def direct_logits(adapter, d: torch.Tensor) -> torch.Tensor:
    """`lm_head(norm(d)) − lm_head(norm(0))` for one decoder row d [d_model], with the model's own final norm (found
    through the adapter's layout) and LM head; the second term removes what any bias adds to every feature."""
    model = adapter.model
    head = model.get_output_embeddings()
    norm = model.get_submodule(adapter.layout.final_norm) if adapter.layout.final_norm else torch.nn.Identity()
    d = d.detach().float()[None]
    with torch.inference_mode():
        return (head(norm(d)) - head(norm(torch.zeros_like(d))))[0].float()


def check_logit_effects(adapter, W_dec: torch.Tensor, k: int = 10, rtol: float = 1e-4, atol: float = 1e-4) -> int:
    """Assert that `adapter.logit_effects(W_dec, k)` lists, for every row, the k most promoted and the k most
    suppressed tokens of the direct computation, in order, with its values. Tokens tied at the k-th place may
    stand in for each other. Returns the number of rows checked."""
    pos_ids, pos_vals, neg_ids, neg_vals = adapter.logit_effects(W_dec, k=k)
    assert pos_ids.shape == pos_vals.shape == neg_ids.shape == neg_vals.shape == (W_dec.shape[0], k)
    for i, d in enumerate(W_dec):
        direct = direct_logits(adapter, d)
        tol = atol + rtol * float(direct.abs().max())
        for ids, vals, sign in ((pos_ids[i], pos_vals[i], 1.0), (neg_ids[i], neg_vals[i], -1.0)):
            assert len(set(ids.tolist())) == k, f"row {i}: a token is listed twice"
            torch.testing.assert_close(vals, direct[ids], rtol=rtol, atol=tol, msg=f"row {i}")
            signed = sign * vals
            assert bool((signed[:-1] >= signed[1:] - tol).all()), f"row {i}: not in order"
            rest = torch.ones_like(direct, dtype=torch.bool)
            rest[ids] = False
            missing = float((sign * direct[rest]).max()) > float(signed[-1]) + tol
            assert not missing, f"row {i}: a stronger token is missing"
    return int(W_dec.shape[0])
