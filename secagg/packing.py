"""Dense packing of a model update (name -> float array) into ciphertext-sized chunks.

All layers are concatenated in the update's order into one float64 vector, which is cut into
chunks of ``values_per_ciphertext`` values; only the last chunk is partly empty. Each chunk becomes
``N/2`` complex slots (value ``2i`` is the real part of slot ``i``, value ``2i+1`` its imaginary
part). The :class:`Layout` remembers names, shapes, dtypes and offsets, so per-layer operations stay
possible: a layer is a contiguous range of the packed vector.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidUpdateError, LayoutMismatchError, PayloadError
from .framing import canonical_json

__all__ = ["LayerSpec", "Layout"]

_FLOAT_DTYPES = ("float16", "float32", "float64")
MAX_NAME_LENGTH = 512
MAX_LAYERS = 100_000


@dataclass(frozen=True)
class LayerSpec:
    """One named array of an update: its shape, dtype and place in the packed vector."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def stop(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class Layout:
    """The order, shapes and dtypes of an update's arrays. Equal layouts have equal hashes."""

    layers: tuple[LayerSpec, ...]

    @classmethod
    def of(cls, update: Mapping[str, Any]) -> Layout:
        """Layout of ``update`` (validated: names are strings, values are float arrays)."""
        arrays = as_arrays(update)
        layers, offset = [], 0
        for name, arr in arrays.items():
            layers.append(LayerSpec(name, tuple(int(d) for d in arr.shape), arr.dtype.name, offset))
            offset += arr.size
        return cls(tuple(layers))

    @property
    def total(self) -> int:
        return self.layers[-1].stop if self.layers else 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.layers)

    def __getitem__(self, name: str) -> LayerSpec:
        for spec in self.layers:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_list(self) -> list[list[Any]]:
        return [[s.name, list(s.shape), s.dtype] for s in self.layers]

    @classmethod
    def from_list(cls, data: Any) -> Layout:
        """Rebuild a layout from :meth:`to_list` output, validating every field (payload input)."""
        if not isinstance(data, list) or not 0 < len(data) <= MAX_LAYERS:
            raise PayloadError("layout must be a non-empty list of [name, shape, dtype] entries")
        layers, offset, seen = [], 0, set()
        for entry in data:
            if not (isinstance(entry, list) and len(entry) == 3):
                raise PayloadError("layout entry must be [name, shape, dtype]")
            name, shape, dtype = entry
            if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH or name in seen:
                raise PayloadError(f"layout has an invalid or duplicate name {str(name)[:60]!r}")
            if not isinstance(shape, list) or len(shape) > 32 or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape
            ):
                raise PayloadError(f"layout entry {name!r} has an invalid shape")
            if dtype not in _FLOAT_DTYPES:
                raise PayloadError(f"layout entry {name!r} has dtype {dtype!r}; expected one of {_FLOAT_DTYPES}")
            seen.add(name)
            spec = LayerSpec(name, tuple(shape), dtype, offset)
            offset += spec.size
            if offset > 2**40:
                raise PayloadError("layout describes an absurdly large update")
            layers.append(spec)
        return cls(tuple(layers))

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical layout: names, shapes and dtypes in order."""
        return hashlib.sha256(canonical_json(self.to_list())).hexdigest()

    def chunks(self, per_chunk: int) -> int:
        return max(1, -(-self.total // per_chunk))

    def pack(self, update: Mapping[str, Any]) -> np.ndarray:
        """Concatenate ``update`` (which must have exactly this layout) into one float64 vector."""
        arrays = as_arrays(update)
        if tuple(arrays) != self.names:
            missing = sorted(set(self.names) - set(arrays))
            extra = sorted(set(arrays) - set(self.names))
            raise LayoutMismatchError(
                f"update names differ from the layout (missing {missing[:5]}, unexpected {extra[:5]}, "
                "or a different order); send every array of the model, in state_dict order"
            )
        out = np.empty(self.total, dtype=np.float64)
        for spec in self.layers:
            arr = arrays[spec.name]
            if arr.shape != spec.shape:
                raise LayoutMismatchError(f"array {spec.name!r} has shape {arr.shape}, the layout says {spec.shape}")
            out[spec.offset:spec.stop] = arr.reshape(-1)
        return out

    def unpack(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """Split a packed vector back into named arrays of the original shapes and dtypes."""
        if vector.shape != (self.total,):
            raise LayoutMismatchError(f"packed vector has shape {vector.shape}, expected ({self.total},)")
        return {s.name: vector[s.offset:s.stop].reshape(s.shape).astype(s.dtype) for s in self.layers}

    def layer_ranges(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """``(layer index, lo, hi)`` for each layer overlapping packed range ``[start, stop)``."""
        for i, spec in enumerate(self.layers):
            lo, hi = max(start, spec.offset), min(stop, spec.stop)
            if lo < hi:
                yield i, lo, hi


def as_arrays(update: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validate an update and return it as a dict of float numpy arrays (order preserved)."""
    if not isinstance(update, Mapping):
        raise InvalidUpdateError(f"an update must be a mapping of names to arrays, got {type(update).__name__}")
    if not update:
        raise InvalidUpdateError("the update is empty; it must hold at least one array")
    out: dict[str, np.ndarray] = {}
    for name, value in update.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
            raise InvalidUpdateError(f"array names must be non-empty strings of at most {MAX_NAME_LENGTH} characters, got {name!r}")
        if hasattr(value, "detach"):  # torch tensors, without importing torch here
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
        if arr.dtype.name not in _FLOAT_DTYPES:
            raise InvalidUpdateError(
                f"array {name!r} has dtype {arr.dtype}; only float16/32/64 can be encrypted. Leave integer "
                "buffers (e.g. BatchNorm's num_batches_tracked) out of the update"
            )
        out[name] = arr
    return out
