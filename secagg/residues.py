"""Residues of a ring's polynomials in numpy: modular sums, and their packing on the wire.

A polynomial is a ``(limbs, N)`` uint64 array: residue ``i`` modulo the ``i``-th prime of the data
level. :class:`Residues` is a part of :class:`secagg.ring.Ring` (its preset, primes ``primes``, ``q``
as a ``(limbs, 1)`` array, ``limbs``, the degree ``n`` and the wire widths ``widths``).
"""

from __future__ import annotations

import numpy as np

from .bitpack import group, pack_bits, read_bits
from .errors import PayloadError
from .presets import Preset

__all__ = ["Residues"]


class Residues:
    """Arithmetic and wire format of residues modulo ``primes``."""

    preset: Preset
    primes: list[int]
    q: np.ndarray
    limbs: int
    n: int
    widths: list[int]

    @property
    def residue_bytes(self) -> int:
        """Bytes of one polynomial on the wire: ``N`` residues per prime, each in its prime's bits."""
        return sum(self.widths) * self.n // 8

    def zeros(self) -> np.ndarray:
        return np.zeros((self.limbs, self.n), dtype=np.uint64)

    def check(self, polys: np.ndarray, *, what: str) -> np.ndarray:
        """``polys`` (one ``(limbs, N)`` polynomial, or a stack of them) if it is uint64 and every
        residue lies below its prime, as SEAL's own loading checks: what reaches SEAL's buffers in
        place must be a valid polynomial of this ring.

        Raises:
            ValueError: not a uint64 array of that shape.
            PayloadError: a residue at or beyond its prime.
        """
        if polys.dtype != np.uint64 or polys.shape[-2:] != (self.limbs, self.n):
            raise ValueError(f"{what} must be uint64 polynomials of shape ({self.limbs}, {self.n}), got {polys.dtype} "
                             f"{polys.shape}")
        if polys.size and np.any(polys.reshape(-1, self.limbs, self.n).max(axis=(0, 2)) >= self.q[:, 0]):
            raise PayloadError(f"{what} holds a residue beyond its prime; it is not a polynomial of this ring")
        return polys

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        s: np.ndarray = a + b
        np.minimum(s, s - self.q, out=s)  # below q, s - q wraps past s: no mask, no np.where
        return s

    def neg(self, a: np.ndarray) -> np.ndarray:
        t: np.ndarray = self.q - a
        np.minimum(t, t - self.q, out=t)  # q - 0 = q becomes 0; any other q - a wraps when q is taken
        return t

    def pack(self, a: np.ndarray) -> bytes:
        """One polynomial's residues, limb after limb, packed as :meth:`pack_into` describes."""
        return self.pack_many(a[None])

    def unpack(self, blob: bytes | memoryview, *, what: str) -> np.ndarray:
        """The inverse of :meth:`pack`; every residue is checked to lie below its prime."""
        if len(blob) != self.residue_bytes:
            raise PayloadError(f"{what} holds {len(blob)} bytes; a polynomial of preset {self.preset.name!r} has "
                               f"{self.residue_bytes}")
        out: np.ndarray = self.unpack_many(blob, 1, what=what)[0]
        return out

    def pack_many(self, polys: np.ndarray) -> bytes:
        """:meth:`pack` of every polynomial of a ``(count, limbs, N)`` array, one after the other."""
        return self.pack_into(polys, np.empty(polys.shape[0] * self.residue_bytes, dtype=np.uint8)).tobytes()

    def pack_into(self, polys: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The residues of ``count`` polynomials written into ``out`` (a uint8 array of ``count *
        residue_bytes``), returned. Per polynomial, limb after limb: the ``N`` residues of a prime
        as one little-endian bit string, ``w`` bits each (``w``: :attr:`widths`, the prime's bit
        length, or the next whole byte where a residue's bits could not be read with one 8-byte
        load: :func:`secagg.presets.wire_bits`): every 8 residues fill exactly ``w`` bytes, so no bit is left free to carry a second
        spelling of the same residues."""
        count, size = polys.shape[0], self.residue_bytes
        if out.shape != (count * size,) or out.dtype != np.uint8:
            raise ValueError(f"out must be a uint8 array of {count * size} bytes")
        if count == 0:
            return out
        offset = 0
        for i, w in enumerate(self.widths):
            span = w * self.n // 8
            g = group(w)
            while g * w < 64:  # stores of 8 bytes need groups of at least 8 bytes (56 bits: 2 residues)
                g *= 2
            pack_bits(polys[:, i].astype("<u8", copy=False).reshape(count, self.n // g, g), w, out, offset, size)
            offset += span
        return out

    def unpack_many(self, blob: bytes | memoryview, count: int, *, what: str, out: np.ndarray | None = None,
                    start: int | None = None) -> np.ndarray:
        """The inverse of :meth:`pack_many` for ``count`` polynomials, each residue checked below its
        prime; into ``out`` (a ``(count, limbs, N)`` uint64 array) when given. With ``start``, the
        polynomials are ``blob[start:start + count * residue_bytes]`` of a larger buffer.

        Residue ``j`` of each group (:func:`secagg.bitpack.group`) is read as the 8 bytes starting at its first
        byte (a strided view of the bytes), shifted and masked to its width: a pass over the data
        per prime and place in the group, no byte shuffling. The final residues' 8 bytes would run past the end of
        the buffer: where they do, the last polynomial goes through a padded copy of its own bytes,
        the others are read in place."""
        size = self.residue_bytes
        begin = 0 if start is None else start
        stop = len(blob) if start is None else begin + count * size
        if stop - begin != count * size or stop > len(blob) or begin < 0:
            raise PayloadError(f"{what} holds {len(blob) if start is None else max(0, len(blob) - begin)} bytes; "
                               f"{count} polynomials of preset {self.preset.name!r} have {count * size}")
        if count == 0:
            return np.empty((0, self.limbs, self.n), dtype=np.uint64)
        data = np.frombuffer(blob, dtype=np.uint8)
        if out is None:
            out = np.empty((count, self.limbs, self.n), dtype=np.uint64)
        elif out.shape != (count, self.limbs, self.n) or out.dtype != np.uint64:
            raise ValueError(f"out must be a uint64 array of shape {(count, self.limbs, self.n)}")
        in_place = count if stop + 8 <= len(data) else count - 1
        if in_place < count:
            tail = np.zeros(size + 8, dtype=np.uint8)
            tail[:size] = data[stop - size:stop]
        offset = 0
        for i, w in enumerate(self.widths):
            groups = group(w)
            step = groups * w // 8  # bytes from one group to the next
            for j in range(groups):
                first, shift = divmod(j * w, 8)
                places = self.n // groups
                if in_place:
                    view = np.ndarray((in_place, places), dtype="<u8", buffer=data, offset=begin + offset + first,
                                      strides=(size, step))
                    read_bits(view, shift, w, out[:in_place, i, j::groups])
                if in_place < count:
                    last = np.ndarray((places,), dtype="<u8", buffer=tail, offset=offset + first, strides=(step,))
                    read_bits(last, shift, w, out[-1, i, j::groups])
            if int(out[:, i].max()) >= self.primes[i]:  # one reduction pass, no boolean array
                raise PayloadError(f"{what} holds a residue beyond its prime; it is not a valid ciphertext half")
            offset += w * self.n // 8
        return out

    def add_into(self, acc: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``acc += x`` modulo each prime, in place (residues below primes < 2^61: the sum fits)."""
        np.add(acc, x, out=acc)
        np.subtract(acc, self.q, out=acc, where=acc >= self.q)
        return acc

    @property
    def lazy_terms(self) -> int:
        """How many residues one uint64 can hold added without a reduction (each is below its prime,
        so ``k`` of them stay below ``k * q``): 255 for 56-bit primes, 15 for 60-bit ones."""
        return (2**64 - 1) // max(self.primes)

    def add_lazy(self, acc: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``acc += x`` without reducing, in place: one pass instead of three. The caller counts the
        terms in ``acc`` and calls :meth:`reduce` before it holds more than :attr:`lazy_terms`."""
        np.add(acc, x, out=acc)
        return acc

    def reduce(self, acc: np.ndarray) -> np.ndarray:
        """``acc`` modulo each prime, in place: residues again after :meth:`add_lazy`."""
        np.remainder(acc, self.q, out=acc)
        return acc
