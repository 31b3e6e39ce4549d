"""Residues packed to their primes' bits: the byte layout of a ciphertext half on the wire.

A prime of ``w`` bits (:func:`secagg.presets.wire_bits`) has its ``N`` residues as one
little-endian bit string, residue ``k`` at bits ``k*w`` to ``k*w + w - 1``: every 8 residues fill
exactly ``w`` bytes, so no bit is free to spell the same residues twice. A reader takes each
residue with one 8-byte load from its first byte (:func:`read_bits`); a writer stores 8 bytes at a
time (:func:`pack_bits`). :class:`secagg.ring.Ring` lays the primes out one after the other.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["group", "pack_bits", "read_bits"]


def read_bits(view: np.ndarray, shift: int, w: int, out: np.ndarray) -> None:
    """Residues of ``w`` bits that start ``shift`` bits into the 8 bytes ``view`` reads."""
    if shift + w == 64:  # the shift alone drops every other residue's bits
        np.right_shift(view, np.uint64(shift), out=out)
    elif shift:
        np.right_shift(view, np.uint64(shift), out=out)
        np.bitwise_and(out, np.uint64((1 << w) - 1), out=out)
    else:
        np.bitwise_and(view, np.uint64((1 << w) - 1), out=out)


def group(w: int) -> int:
    """Residues of ``w`` bits from one byte boundary to the next: 1 for whole bytes, 2 for 60 bits,
    8 for an odd width."""
    return 8 // math.gcd(w, 8)


def pack_bits(residues: np.ndarray, w: int, out: np.ndarray, offset: int, size: int) -> None:
    """Groups of ``g`` residues below ``2^w`` (a ``(count, places, g)`` uint64 array, ``G = g * w / 8``
    whole bytes, at least 8) written as little-endian bit strings, residue ``j`` at bits ``j*w`` to
    ``j*w + w - 1`` of its group, group ``k`` of polynomial ``c`` at ``out[c*size + offset + k*G:][:G]``.
    Each group is written as 8-byte stores at bytes 0, 8, ... and ``G - 8``, each holding its 64
    bits of the group's bit string: two stores that overlap write the same values to the bytes they
    share, and no store reaches the next group."""
    count, places, g = residues.shape
    group_bytes = g * w // 8
    stores = list(range(0, group_bytes - 7, 8)) + ([group_bytes - 8] if group_bytes % 8 else [])
    acc, part = np.empty((2, count, places), dtype=np.uint64)  # reused: no fresh pages per store
    for at in stores:
        lo, empty = 8 * at, True
        for j in range(g):
            first = j * w
            if first + w <= lo or first >= lo + 64:
                continue  # residue j has no bit in this store
            op, by = (np.left_shift, first - lo) if first >= lo else (np.right_shift, lo - first)
            op(residues[..., j], np.uint64(by), out=acc if empty else part)  # bits past 64 fall off
            if not empty:
                np.bitwise_or(acc, part, out=acc)
            empty = False
        np.ndarray((count, places), dtype="<u8", buffer=out, offset=offset + at, strides=(size, group_bytes))[...] = acc
