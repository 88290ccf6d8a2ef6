"""The one SAE record every loader returns, and its forward pass (float32, SAELens orientation)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from atlas.errors import DimensionError

ACTIVATION_KINDS = ("relu", "jumprelu", "topk", "threshold", "gated", "groupmax", "tanh_relu", "signed_topk")
INPUT_NORM_KINDS = ("none", "layer_norm", "constant_norm_rescale", "scale")

# OpenAI v5 / SAELens layer_norm: eps is added to the (unbiased) std, not to the variance.
_LAYER_NORM_EPS = 1e-5


@dataclass
class Activation:
    """How pre-activations become feature activations.

    relu, tanh_relu: elementwise. jumprelu: ReLU(h)·1[h > threshold]. threshold: ReLU(h)·1[ReLU(h) > threshold]
    (BatchTopK at inference). topk: the k largest of h, then ReLU. signed_topk: the k largest |h|, signed.
    groupmax: k contiguous groups, each keeps its ReLU'd max. gated: 1[x_c W_enc + b_gate > 0]·ReLU(x_c (W_enc ⊙
    exp(r_mag)) + b_mag). With rescale_by_decoder_norm the pre-activation is multiplied by ||W_dec[j]|| before the
    activation, and decoding divides by it again (SAELens TopK/BatchTopK training checkpoints).
    """

    kind: str = "relu"
    k: int | None = None
    threshold: Tensor | None = None
    b_gate: Tensor | None = None
    b_mag: Tensor | None = None
    r_mag: Tensor | None = None
    rescale_by_decoder_norm: bool = False


@dataclass
class InputNorm:
    """How the input is normalised before encoding; the output is mapped back the same way.

    layer_norm: (x − mean)/(std_unbiased + 1e-5), output ·std + mean. constant_norm_rescale: x·sqrt(d_in)/||x||,
    output divided by the same factor. scale: x·scale, output divided by scale (a dataset-wide constant).
    """

    kind: str = "none"
    scale: float = 1.0


_SCAN_BYTES = 16 << 20  # dense codes are scanned for nonzeros in slices whose mask is this size, kept in cache


@dataclass(frozen=True)
class SparseCodes:
    """A batch's feature activations without the dense [T, F] matrix: every code with any bit set (so -0.0 and
    NaN are kept), row-major. `flat` is row * n_features + feature, ascending; `values` are float32."""

    flat: np.ndarray
    values: np.ndarray
    n_rows: int
    n_features: int

    @classmethod
    def from_dense(cls, codes: Tensor | np.ndarray) -> SparseCodes:
        if isinstance(codes, Tensor):
            codes = codes.detach().to("cpu", torch.float32).numpy()
        a = np.ascontiguousarray(codes, np.float32)
        if a.ndim != 2:
            raise DimensionError(f"codes must be [tokens, features], got shape {tuple(a.shape)}")
        n, f = a.shape
        bits = a.view(np.uint32)
        rows = max(1, _SCAN_BYTES // max(f, 1))
        parts = [np.flatnonzero(bits[s : s + rows] != 0) + s * f for s in range(0, n, rows)]
        flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return cls(flat, a.reshape(-1)[flat], n, f)


@dataclass
class SaeWeights:
    """An SAE (or transcoder, d_out ≠ d_in) in one canonical form, whatever file it came from."""

    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor
    activation: Activation = field(default_factory=Activation)
    input_norm: InputNorm = field(default_factory=InputNorm)
    pre_bias: Tensor | None = None
    decode_scale: Tensor | None = None
    W_skip: Tensor | None = None
    hook: str | None = None
    hook_candidates: list[str] = field(default_factory=list)
    format: str = ""
    path: str = ""
    convention: str = ""
    metadata: dict = field(default_factory=dict)

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def d_out(self) -> int:
        return int(self.W_dec.shape[1])

    # ---- forward pass -------------------------------------------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:
        """Feature activations [..., d_sae] (dense float32) for inputs [..., d_in]."""
        with torch.inference_mode():
            x = self._as_input(x)
            x_n, _ = self._normalise(x)
            return self._encode_normalised(x_n)

    def encode_sparse(self, x: Tensor) -> SparseCodes:
        """Codes of inputs [..., d_in], one row per position, as `SparseCodes`: those of `encode(x)`, exactly.

        TopK kinds go straight from the top-k indices, so the dense [T, d_sae] matrix (0.5 GB for 8k tokens and
        16k features) is never written nor scanned.
        """
        with torch.inference_mode():
            x = self._as_input(x)
            x_n, _ = self._normalise(x.reshape(-1, x.shape[-1]))
            act = self.activation
            if act.kind not in ("topk", "signed_topk"):
                return SparseCodes.from_dense(self._encode_normalised(x_n))
            h = self._pre_activation(x_n)
            if act.kind == "topk":
                vals, idx = h.topk(act.k, dim=-1)
                vals = torch.relu(vals)
            else:
                _, idx = h.abs().topk(act.k, dim=-1)
                vals = h.gather(-1, idx)
            idx, order = idx.sort(dim=-1)
            vals = vals.gather(-1, order).to("cpu", torch.float32).contiguous().numpy()
            flat = (idx + torch.arange(len(idx), device=idx.device)[:, None] * h.shape[-1]).cpu().numpy()
            keep = vals.view(np.uint32) != 0
            return SparseCodes(flat[keep], vals[keep], int(h.shape[0]), int(h.shape[-1]))

    def decode(self, f: Tensor, x: Tensor | None = None) -> Tensor:
        """Reconstruction [..., d_out] from features [..., d_sae].

        Per-token normalisations (layer_norm, constant_norm_rescale) and the skip term need the input x; without
        it the output stays in the normalised space and has no skip term (what a single feature direction needs).
        """
        with torch.inference_mode():
            stats = None
            if x is not None:
                x = self._as_input(x)
                _, stats = self._normalise(x)
            return self._decode(f.to(self.W_dec.dtype), x, stats)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(features, reconstruction) for inputs [..., d_in], de-normalised with the statistics of x itself."""
        with torch.inference_mode():
            x = self._as_input(x)
            x_n, stats = self._normalise(x)
            f = self._encode_normalised(x_n)
            return f, self._decode(f, x, stats)

    def _as_input(self, x: Tensor) -> Tensor:
        x = x.to(device=self.W_enc.device, dtype=torch.float32)
        hook_z = self.metadata.get("reshape_activations") == "hook_z"
        if hook_z and x.shape[-1] != self.d_in and x.ndim >= 2 and x.shape[-2] * x.shape[-1] == self.d_in:
            # hook_z SAEs are trained on [..., n_heads, d_head] flattened to d_in.
            x = x.flatten(-2)
        if x.shape[-1] != self.d_in:
            raise DimensionError(
                f"The SAE at {self.path} expects inputs of width d_in={self.d_in}, got {tuple(x.shape)}; "
                "check the hook point and the model."
            )
        return x

    def _normalise(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        kind = self.input_norm.kind
        if kind == "none":
            return x, None
        if kind == "scale":
            return x * self.input_norm.scale, None
        if kind == "constant_norm_rescale":
            c = math.sqrt(self.d_in) / x.norm(dim=-1, keepdim=True)
            return x * c, (1.0 / c, torch.zeros_like(c))
        if kind == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            x = x - mu
            std = x.std(dim=-1, keepdim=True)
            return x / (std + _LAYER_NORM_EPS), (std, mu)
        raise ValueError(f"unknown input normalisation {kind!r}")

    def _decoder_norms(self) -> Tensor:
        return self.W_dec.norm(dim=1)

    def _encode_normalised(self, x_n: Tensor) -> Tensor:
        act = self.activation
        if act.kind == "gated":
            x_c = self._centred(x_n)
            gate = (x_c @ self.W_enc + act.b_gate) > 0
            mag = torch.relu(x_c @ (self.W_enc * torch.exp(act.r_mag)) + act.b_mag)
            return mag * gate
        return _apply_activation(act, self._pre_activation(x_n))

    def _centred(self, x_n: Tensor) -> Tensor:
        return x_n - self.pre_bias if self.pre_bias is not None else x_n

    def _pre_activation(self, x_n: Tensor) -> Tensor:
        h = self._centred(x_n) @ self.W_enc + self.b_enc
        if self.activation.rescale_by_decoder_norm:
            h = h * self._decoder_norms()
        return h

    def _decode(self, f: Tensor, x: Tensor | None, stats: tuple[Tensor, Tensor] | None) -> Tensor:
        if self.activation.rescale_by_decoder_norm:
            f = f / self._decoder_norms()
        if self.decode_scale is not None:
            f = f * self.decode_scale
        x_hat = f @ self.W_dec + self.b_dec
        kind = self.input_norm.kind
        if kind == "scale":
            x_hat = x_hat / self.input_norm.scale
        elif stats is not None:
            mul, shift = stats
            x_hat = x_hat * mul + shift
        # SAELens skip transcoders add the skip term on the raw input, after de-normalisation.
        if self.W_skip is not None and x is not None:
            x_hat = x_hat + x @ self.W_skip.T
        return x_hat

    # ---- bookkeeping --------------------------------------------------------------------------------------------

    def to(self, device: str | torch.device) -> SaeWeights:
        """A copy with every tensor on `device` (still float32)."""

        def move(t):
            return None if t is None else t.to(device)

        act = self.activation
        return replace(
            self,
            W_enc=move(self.W_enc),
            b_enc=move(self.b_enc),
            W_dec=move(self.W_dec),
            b_dec=move(self.b_dec),
            pre_bias=move(self.pre_bias),
            decode_scale=move(self.decode_scale),
            W_skip=move(self.W_skip),
            activation=replace(
                act,
                threshold=move(act.threshold),
                b_gate=move(act.b_gate),
                b_mag=move(act.b_mag),
                r_mag=move(act.r_mag),
            ),
            metadata=dict(self.metadata),
            hook_candidates=list(self.hook_candidates),
        )

    def named_tensors(self) -> list[tuple[str, Tensor]]:
        """Every tensor that takes part in the forward pass, in a fixed order."""
        act = self.activation
        pairs = [
            ("W_enc", self.W_enc),
            ("b_enc", self.b_enc),
            ("W_dec", self.W_dec),
            ("b_dec", self.b_dec),
            ("pre_bias", self.pre_bias),
            ("decode_scale", self.decode_scale),
            ("W_skip", self.W_skip),
            ("threshold", act.threshold),
            ("b_gate", act.b_gate),
            ("b_mag", act.b_mag),
            ("r_mag", act.r_mag),
        ]
        return [(name, t) for name, t in pairs if t is not None]

    def content_hash(self) -> str:
        """16 hex chars of sha256 over the weights and every setting that changes the forward pass."""
        h = hashlib.sha256()
        act, norm = self.activation, self.input_norm
        h.update(
            repr((act.kind, act.k, act.rescale_by_decoder_norm, norm.kind, float(norm.scale))).encode()
        )
        for name, t in self.named_tensors():
            arr = t.detach().to("cpu", torch.float32).contiguous().numpy()
            h.update(f"{name}:{tuple(arr.shape)}".encode())
            h.update(memoryview(arr).cast("B"))
        return h.hexdigest()[:16]


def _apply_activation(act: Activation, h: Tensor) -> Tensor:
    kind = act.kind
    if kind == "relu":
        return torch.relu(h)
    if kind == "tanh_relu":
        return torch.tanh(torch.relu(h))
    if kind == "jumprelu":
        return torch.relu(h) * (h > act.threshold)
    if kind == "threshold":
        r = torch.relu(h)
        return r * (r > act.threshold)
    if kind == "topk":
        vals, idx = h.topk(act.k, dim=-1)
        return torch.zeros_like(h).scatter_(-1, idx, torch.relu(vals))
    if kind == "signed_topk":
        _, idx = h.abs().topk(act.k, dim=-1)
        return torch.zeros_like(h).scatter_(-1, idx, h.gather(-1, idx))
    if kind == "groupmax":
        r = torch.relu(h)
        groups = r.unflatten(-1, (act.k, h.shape[-1] // act.k))
        vals, idx = groups.max(dim=-1, keepdim=True)
        return torch.zeros_like(groups).scatter_(-1, idx, vals).flatten(-2)
    raise ValueError(f"unknown activation {kind!r}")
