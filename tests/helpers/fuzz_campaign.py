"""A long fuzz campaign over the whole server path, with counts (a one-off run, not CI).

    python tests/helpers/fuzz_campaign.py --cases 100000 --workers 2 [--seed 0]

Each case is one input to :func:`fuzz_wire.one_input` (a fuzzed upload next to a valid one,
through the server, the contributor set and the key holder's release), drawn from a seeded
generator: the mode byte, then a random script (raw bytes, edits of a valid upload, edits of its
header re-signed by an insider, edits of its ciphertexts re-signed). Workers are subprocesses, so
a crash (a signal from native code) is counted, not fatal; a case that runs longer than
``--timeout`` seconds counts as a hang. Printed at the end, as JSON: cases, and per outcome -
``ok`` (the valid upload released), ``refused`` (an insider's garbage ciphertext made the key
holder refuse the round: documented), ``lost`` (the valid upload knocked out), ``unspecific`` (a
rejection with a non-secfl error), ``uncaught`` (any other exception), ``hang``, ``crash``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent


def case_input(seed: int, index: int) -> bytes:
    import numpy as np

    rng = np.random.default_rng([seed, index])
    mode = int(rng.integers(0, 4))
    if mode == 0:
        size = int(rng.integers(0, 4096))
        raw = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        if rng.random() < 0.5:  # past the magic, into the framing and header checks
            raw = b"SECFLUP2" + raw
        return bytes([mode]) + raw
    ops = int(rng.integers(1, 12))
    return bytes([mode]) + rng.integers(0, 256, 6 * ops, dtype=np.uint8).tobytes()


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _Timeout()


def worker(seed: int, start: int, stop: int, progress: Path, timeout: int) -> None:
    """Run cases ``start..stop``; append one outcome per line to ``progress``."""
    import logging

    sys.path[:0] = [str(HERE.parents[1]), str(HERE.parent)]  # the repository before tests/ (tests/secagg!)
    from helpers import fuzz_wire

    logging.disable(logging.WARNING)
    fuzz_wire.world()
    signal.signal(signal.SIGALRM, _alarm)
    with progress.open("a", buffering=1) as out:
        for index in range(start, stop):
            signal.alarm(timeout)
            try:
                outcome = fuzz_wire.one_input(case_input(seed, index))
            except _Timeout:
                outcome = "hang"
            except AssertionError as exc:
                outcome = "lost" if "knocked out" in str(exc) or "as a whole" in str(exc) else "unspecific"
            except Exception as exc:  # noqa: BLE001 - counted: that is the point
                outcome = f"uncaught:{type(exc).__name__}"
            finally:
                signal.alarm(0)
            out.write(f"{index} {outcome}\n")


def _run_slice(seed: int, start: int, stop: int, timeout: int) -> Counter:
    """Cases ``start..stop`` in subprocesses, restarting after a crash at the case that follows it."""
    counts: Counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        progress = Path(tmp) / "progress"
        progress.touch()
        nxt = start
        while nxt < stop:
            proc = subprocess.run([sys.executable, __file__, "--worker", str(seed), str(nxt), str(stop), str(progress),
                                   str(timeout)], check=False)
            lines = progress.read_text().split()
            done = {int(i): o for i, o in zip(lines[0::2], lines[1::2])}
            nxt = max(done, default=start - 1) + 1
            if proc.returncode != 0 and nxt < stop:
                done[nxt] = f"crash:{proc.returncode}"
                with progress.open("a") as out:
                    out.write(f"{nxt} crash:{proc.returncode}\n")
                nxt += 1
        lines = progress.read_text().split()
        counts.update(o.split(":")[0] if o.startswith("crash") else o for o in lines[1::2])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=20)
    args = parser.parse_args()
    t0 = time.time()
    bounds = [args.cases * k // args.workers for k in range(args.workers + 1)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(args.workers) as pool:
        parts = list(pool.map(lambda k: _run_slice(args.seed, bounds[k], bounds[k + 1], args.timeout),
                              range(args.workers)))
    total: Counter = sum(parts, Counter())
    print(json.dumps({"cases": sum(total.values()), "seed": args.seed, "seconds": round(time.time() - t0, 1),
                      "outcomes": dict(sorted(total.items()))}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]), int(sys.argv[6]))
    else:
        main()
