"""Order-free building blocks: hashed sampling keys, power-of-two value grids, exact float sums."""

from __future__ import annotations

import mmap

import numpy as np
import torch

# A feature with no activation yet has no grid; any real exponent is larger.
NO_GRID = np.int32(-(1 << 30))

SALT_INTERVAL = 1
SALT_RANDOM = 2

_M64 = (1 << 64) - 1


def _mix_constant(seed: int, salt: int) -> np.uint64:
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(salt) * 0xD6E8FEB86659FD93 + 0x632BE59BD9B4E019) & _M64
    return np.uint64(x)


def sample_key(seed: int, salt: int, feature: np.ndarray, index: np.ndarray) -> np.ndarray:
    """A uniform key in [0, 1) for each (feature, global token index), a pure function of its arguments.

    Keeping the smallest keys is a uniform sample without replacement, and because the key never depends on
    when or in which batch a token was seen, the sample is the same for any batching or sharding.
    """
    with np.errstate(over="ignore"):
        x = np.asarray(index, np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x ^= np.asarray(feature, np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        x ^= _mix_constant(seed, salt)
        # splitmix64's finaliser: every input bit reaches every output bit.
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    # 53 bits convert to float64 exactly, so comparisons stay exact.
    return (x >> np.uint64(11)).astype(np.float64) * (2.0**-53)


def grid_exponent(max_value: np.ndarray, capacity: int) -> np.ndarray:
    """The smallest e with max < capacity * 2**e (so the grid uses between capacity/2 and capacity sub-bins).

    It depends only on the max, so the final grid is the same however the data arrived.
    """
    _, ex = np.frexp(np.asarray(max_value, np.float32))
    e = ex.astype(np.int32) - np.int32(capacity.bit_length() - 1)
    return np.where(max_value > 0, e, NO_GRID).astype(np.int32)


def sub_bin(values: np.ndarray, exponent: np.ndarray, capacity: int) -> np.ndarray:
    """floor(value / 2**exponent): exact, since dividing by a power of two only shifts the exponent."""
    b = np.floor(np.ldexp(values.astype(np.float64), -exponent.astype(np.int64))).astype(np.int64)
    return np.minimum(b, capacity - 1)


def coarsen_counts(counts: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Counts [n, C] on grids whose widths grow by 2**shift[r]: sub-bin b goes to b >> shift (exact)."""
    n, c = counts.shape
    if n == 0:
        return counts.copy()
    target = np.arange(c)[None, :] >> np.minimum(shift, 62)[:, None]
    flat = (np.arange(n)[:, None] * c + target).ravel()
    out = torch.zeros(n * c, dtype=torch.int64)
    out.index_add_(0, torch.from_numpy(flat), torch.from_numpy(np.ascontiguousarray(counts, np.int64).ravel()))
    return out.numpy().reshape(n, c)


def float32_parts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(biased exponent, integer mantissa) of positive float32 values: value = mantissa * 2**(max(e,1) - 150).

    Summing mantissas per exponent in int64 makes feature sums exact and therefore independent of order.
    """
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32)
    expo = (bits >> np.uint32(23)).astype(np.int64) & 0xFF
    mant = (bits & np.uint32(0x7FFFFF)).astype(np.int64) | ((expo > 0).astype(np.int64) << 23)
    return expo, mant


def sum_from_parts(mantissa_sums: np.ndarray) -> np.ndarray:
    """Float64 sums from per-exponent mantissa sums [F, 256], added in a fixed order."""
    scale = np.maximum(np.arange(256), 1) - 150
    return np.ldexp(mantissa_sums.astype(np.float64), scale[None, :]).sum(axis=1)


def zeros_hugepage(n: int, dtype: np.dtype) -> np.ndarray:
    """A zeroed array backed by memory advised for huge pages.

    The co-activation accumulator takes millions of random increments per batch; with 4 KiB pages nearly
    every one misses the TLB, and huge pages roughly halve the time.
    """
    dtype = np.dtype(dtype)
    nbytes = int(n) * dtype.itemsize
    if nbytes < (64 << 20):
        return np.zeros(n, dtype)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)
    except (AttributeError, OSError):  # pragma: no cover - platforms without THP
        pass
    return np.frombuffer(buf, dtype=dtype, count=n)
