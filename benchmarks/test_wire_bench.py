"""What packing residues to their primes' bits costs, and why a sized preset shrinks its last prime.

Run:  python -m pytest benchmarks/test_wire_bench.py -s

Per preset, one 1M-parameter upload's worth of first halves (123 polynomials of random residues):
the bytes per float32 byte, and the CPU time of :meth:`Ring.pack_into` (a client's and the server's
writer) and :meth:`Ring.unpack_many` (the server's reader, every residue range-checked), medians of
repetitions interleaved across the presets. Then what a client pays SEAL once per ciphertext: saving
an NTT-form plaintext, whose zstd compression slows down on residues with three or more zero bytes
on top, for the ways of splitting the 79 data bits of ``strict-for-10``. Target: the split
:func:`secagg.sized_preset` picks (56 + 23) saves faster than an even one (40 + 39).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial

import numpy as np

import secagg
from secagg import sealio
from secagg.ring import Ring

POLYS, REPEATS = 123, 15


def _polys(ring: Ring, count: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([np.stack([rng.integers(0, q, ring.n, dtype=np.uint64) for q in ring.primes])
                     for _ in range(count)])


def _interleaved(jobs: Mapping[str, Callable[[], object]]) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for r in range(REPEATS):
        for name in (list(jobs) if r % 2 else list(jobs)[::-1]):
            t0 = time.process_time()
            jobs[name]()
            times[name].append(time.process_time() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def test_packing_cost_per_preset():
    jobs: dict[str, Callable[[], object]] = {}
    sizes: dict[str, float] = {}
    for name in ("compact", "strict", "compact-for-10", "strict-for-10"):
        ring = Ring(secagg.get_preset(name))
        polys, out = _polys(ring, POLYS), np.empty(POLYS * ring.residue_bytes, np.uint8)
        back = np.empty_like(polys)
        jobs[f"{name} pack"] = partial(ring.pack_into, polys, out)
        jobs[f"{name} unpack"] = partial(ring.unpack_many, out.data, POLYS, what="x", out=back)
        sizes[name] = ring.residue_bytes / (4 * ring.n)
        ring.pack_into(polys, out)
    got = _interleaved(jobs)
    for name, ratio in sizes.items():
        print(f"{name:15s} {ratio:.4f}x float32  pack {got[name + ' pack'] * 1e3:6.2f} ms  "
              f"unpack {got[name + ' unpack'] * 1e3:6.2f} ms  ({POLYS} polynomials, CPU, median of {REPEATS})")
    assert sizes["compact-for-10"] <= 1.5 and sizes["strict-for-10"] <= 2.5


def test_the_sized_split_saves_faster_than_an_even_one():
    strict10 = secagg.get_preset("strict-for-10")
    splits = {"56+23 (sized)": strict10, "40+39 (even)": replace(strict10, name="even", coeff_modulus_bits=(40, 39, 60)),
              "56+56 (strict)": secagg.get_preset("strict")}
    plaintexts = {k: Ring(p).plaintext(_polys(Ring(p), 1)[0]) for k, p in splits.items()}
    def saves(pt: object) -> None:
        for _ in range(20):
            sealio.dump(pt)

    got = _interleaved({k: partial(saves, pt) for k, pt in plaintexts.items()})
    for k, s in got.items():
        print(f"save one plaintext, {k:15s} {s / 20 * 1e3:.3f} ms (CPU, median of {REPEATS} x 20)")
    assert got["56+23 (sized)"] < got["40+39 (even)"]
