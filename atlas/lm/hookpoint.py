"""Reading and editing the activation at a hook point during a forward pass (`HookSpec` says where)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from atlas.errors import ModelError
from atlas.lm.hooks import HookSpec, Norm


class _Reached(Exception):
    """Raised from inside a hook to abandon the forward once the wanted activation is in hand."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value


def capture(model: nn.Module, spec: HookSpec, forward: Callable[[], object]) -> torch.Tensor:
    """Run `forward` until it reaches the hook point and return the activation there; later layers never run."""
    module = model.get_submodule(spec.module)

    def stop(value):
        if hasattr(value, "to_tuple"):  # a whole (sub)model hooked: its ModelOutput leads with the hidden state
            value = value.to_tuple()
        if isinstance(value, tuple):
            value = value[spec.tuple_index]
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{spec.description} is a {type(value).__name__}, not a tensor; hook a layer instead")
        raise _Reached(value)

    if spec.io == "input":

        def pre_hook(_mod, args, kwargs):
            if len(args) > spec.tuple_index:
                stop(args[spec.tuple_index])
            # Some HF layers receive their activation by keyword.
            tensors = [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
            stop(kwargs.get("hidden_states", tensors[0] if tensors else None))

        handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        handle = module.register_forward_hook(lambda _mod, _args, out: stop(out))
    try:
        forward()
    except _Reached as reached:
        return _normalize(reached.value, spec)
    finally:
        handle.remove()
    raise ModelError(f"the forward pass finished without reaching {spec.description}; is the hook on an unused module?")


def _normalize(x: torch.Tensor, spec: HookSpec) -> torch.Tensor:
    if spec.normalize is Norm.NONE:
        return x
    x = x.float()
    if spec.normalize is Norm.LAYER_NORM:
        x = x - x.mean(-1, keepdim=True)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + spec.eps)


@contextmanager
def intervene(model: nn.Module, spec: HookSpec, edit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """While open, every forward pass carries on with `edit(value)` in place of the value at the hook point.

    `edit` receives what `capture` reads there (the module's input or output, the spec's tuple element) and
    returns a tensor of the same shape. A normalised `ln*.hook_normalized` is refused: it is computed from the
    norm's input for reading only (no gain, no bias), so no tensor of the model holds it to be edited.
    """
    if spec.normalize is not Norm.NONE:
        raise ModelError(
            f"cannot edit the activation at {spec.hook.strip()!r}: it is {spec.description}, computed for reading "
            "only, and no tensor of the model holds it; steer at the residual stream instead "
            "(e.g. blocks.L.hook_resid_pre)"
        )

    def edited(value):
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{spec.description} is a {type(value).__name__}, not a tensor; hook a layer instead")
        return edit(value).to(value.dtype)

    i, module = spec.tuple_index, model.get_submodule(spec.module)
    if spec.io == "input":

        def pre_hook(_mod, args, kwargs):
            if len(args) > i:
                return (*args[:i], edited(args[i]), *args[i + 1 :]), kwargs
            # The same keyword `capture` reads: hidden_states, else the first tensor.
            name = "hidden_states" if "hidden_states" in kwargs else \
                next((k for k, v in kwargs.items() if isinstance(v, torch.Tensor)), None)
            return args, {**kwargs, name: edited(kwargs.get(name))}

        handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:

        def hook(_mod, _args, out):
            if isinstance(out, tuple):
                return (*out[:i], edited(out[i]), *out[i + 1 :])
            return edited(out)

        handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
