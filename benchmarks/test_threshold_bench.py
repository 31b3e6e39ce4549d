"""Threshold keys against the single-key preset of the same modulus (``strict``), side by side.

Run:  python -m pytest benchmarks/test_threshold_bench.py -s

1M parameters x 10 clients, committee 5 with threshold 3. Repetitions interleave the two methods
step by step; times are CPU seconds of this process (medians of 5; clients encrypt in this process,
not on worker processes, so that all of their CPU time counts). The key holder's figure for
threshold keys is given twice: the **critical path** (the slowest member's partial, then the
combination - members on separate machines compute their partials in parallel) and the committee's
**total** CPU. Targets: bytes per client <= 1.5x, client, server and key-holder critical path
<= 2x the single key's.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import secagg
from secagg.threshold import CommitteeMember
from secfl.bench.baselines import SecAgg, Timer
from secfl.bench.cells import layer_shapes
from secfl.bench.threshold import SecAggThreshold

PARAMS, CLIENTS, REPEATS = 1_000_000, 10, 5


def _cpu(fn, *args, **kwargs):
    t = time.process_time()
    out = fn(*args, **kwargs)
    return time.process_time() - t, out


@pytest.fixture(scope="module")
def methods():
    # encryption in this process, so that its CPU time counts (worker processes' would not)
    limit = secagg.worker_limit(1)
    limit.__enter__()
    shapes = layer_shapes(PARAMS)
    single, threshold = SecAgg("strict"), SecAggThreshold()
    single.setup(shapes=shapes, clients=CLIENTS)
    threshold.setup(shapes=shapes, clients=CLIENTS)
    rng = np.random.default_rng(0)
    update = {n: rng.uniform(-0.05, 0.05, s).astype(np.float32) for n, s in shapes.items()}
    yield single, threshold, update
    limit.__exit__(None, None, None)


def _committee_round(m: SecAggThreshold, request: bytes) -> tuple[float, float, float]:
    members = {q: CommitteeMember(shares=m.shares[q], keys=m.holder_keys[q], identity=m.ids[q], epoch=m.epoch,
                                  roster=m.roster, ledger=secagg.MemoryLedger(), min_contributors=1) for q in m.quorum}
    for q in m.quorum:
        members[q].ledger.claim_round(m.run, 0, m.commitment)
    times, partials = [], {}
    for q in m.quorum:
        t, partials[q] = _cpu(members[q].partial, request, quorum=m.quorum)
        times.append(t)
    combine, _ = _cpu(members[m.quorum[0]].combine, request, quorum=m.quorum, partials=partials)
    return max(times) + combine, sum(times) + combine, combine


def test_threshold_costs_against_the_single_key(methods, capsys):
    single, threshold, update = methods
    rows: dict[str, list[float]] = {k: [] for k in ("client_1", "client_t", "server_1", "server_t", "holder_1",
                                                   "holder_t_critical", "holder_t_total")}
    for _ in range(REPEATS):
        t, p1 = _cpu(lambda: [single.client(update, k, Timer()) for k in range(CLIENTS)])
        rows["client_1"].append(t / CLIENTS)
        t, pt = _cpu(lambda: [threshold.client(update, k, Timer()) for k in range(CLIENTS)])
        rows["client_t"].append(t / CLIENTS)
        t, agg_1 = _cpu(single.server, p1, Timer())
        rows["server_1"].append(t)
        t, agg_t = _cpu(threshold.server, pt, Timer())
        rows["server_t"].append(t)
        t, _ = _cpu(single.key_holder, agg_1, Timer())
        rows["holder_1"].append(t)
        critical, total, _ = _committee_round(threshold, agg_t)
        rows["holder_t_critical"].append(critical)
        rows["holder_t_total"].append(total)
    med = {k: float(np.median(v)) for k, v in rows.items()}
    bytes_1, bytes_t = len(p1[0][0]), len(pt[0][0])
    ratios = {"bytes": bytes_t / bytes_1, "client": med["client_t"] / med["client_1"],
              "server": med["server_t"] / med["server_1"], "key holder (critical path)":
              med["holder_t_critical"] / med["holder_1"], "key holder (committee total)":
              med["holder_t_total"] / med["holder_1"]}
    with capsys.disabled():
        print(f"\n{PARAMS:,} parameters x {CLIENTS} clients, strict, committee 5, t = 3; CPU s, median of {REPEATS}:")
        for k, v in med.items():
            print(f"  {k:<20} {v:.3f}")
        print(f"  bytes per client     {bytes_1:,} (single key) vs {bytes_t:,} (threshold)")
        print("  ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    assert ratios["bytes"] <= 1.5 and ratios["client"] <= 2 and ratios["server"] <= 2
    assert ratios["key holder (critical path)"] <= 2
