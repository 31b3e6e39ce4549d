"""Server memory with 50 clients x 1M parameters: folding uploads one at a time vs loading them all.

Run:  python -m pytest -q -s benchmarks/test_server_memory.py

Peak memory is the process's peak resident set (``VmHWM``, which includes SEAL's native
allocations that ``tracemalloc`` cannot see), reset before each step through
``/proc/self/clear_refs``. The payloads themselves (what arrived on the wire) are held in both
cases; the figure is what the server needs on top of them.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

import secagg

N_CLIENTS = 50
N_PARAMS = 1_000_000
_STATUS = Path("/proc/self/status")

pytestmark = pytest.mark.skipif(not _STATUS.exists(), reason="peak RSS needs Linux /proc")


def _rss(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_above_current(step) -> tuple[int, object]:
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _rss("VmRSS")
    out = step()
    return _rss("VmHWM") - before, out


@pytest.fixture(scope="module")
def wire():
    keys = secagg.generate_keys(preset="strict")
    rng = np.random.default_rng(0)
    base = (rng.standard_normal(N_PARAMS) * 0.01).astype(np.float32)
    # distinct updates are not needed for memory; distinct client ids are
    payloads = [secagg.encrypt_update({"w": base}, keys.secret, round=0, client_id=f"c{k}").to_bytes()
                for k in range(N_CLIENTS)]
    return keys, payloads


def test_server_memory_is_bounded(wire):
    keys, payloads = wire
    mb = 1 / 2**20

    def load_all():
        updates = [secagg.EncryptedUpdate.from_bytes(b, keys.public, expected_round=0) for b in payloads]
        return secagg.aggregate(updates, keys.public).to_bytes()

    def fold():
        acc = secagg.RunningSum(keys.public, expected_round=0)
        for b in payloads:
            acc.add(secagg.EncryptedUpdate.from_bytes(b, keys.public, expected_round=0, load=False))
        return acc.result().to_bytes()

    fold_peak, a = _peak_above_current(fold)
    all_peak, b = _peak_above_current(load_all)
    payload_mb = sum(len(p) for p in payloads) * mb
    print(f"\nserver, {N_CLIENTS} clients x {N_PARAMS:,} parameters (strict), payloads held: {payload_mb:.0f} MB")
    print(f"  peak memory above the payloads: fold one at a time {fold_peak * mb:.0f} MB, "
          f"load all then add {all_peak * mb:.0f} MB ({all_peak / max(fold_peak, 1):.1f}x)")
    assert len(a) == len(b)
    # folding needs a running sum, one parsed update and the output: a few updates' worth, not fifty
    assert fold_peak < 0.25 * all_peak
