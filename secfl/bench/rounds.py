"""One federated round on digits, plaintext vs each encrypted protocol, for ``secfl bench`` and
``benchmarks/test_round_bench.py`` (the same configurations and timing in both).

Two figures per protocol. A one-round simulation (best wall time of several) counts what a
one-round run costs: the federation's set-up (identities, roster, enrolment) with its one round.
A federation pays its set-up once, so ``secfl bench`` also times the rounds after the first of
several :data:`STEADY_ROUNDS`-round runs (wall and CPU time between the end of one round and the
end of the next: training, encryption, aggregation, release and evaluation), and reports their
medians, the ratio of the medians, and the range of that ratio over the repetitions."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RoundSpec", "round_configs", "time_round", "time_rounds", "steady_figures", "measure_round", "round_row",
           "STEADY_ROUNDS"]

#: Rounds per run for the steady-state figures: the first is left out, the others timed.
STEADY_ROUNDS = 5


@dataclass(frozen=True)
class RoundSpec:
    """One federated round on digits: plaintext vs ``protocol`` with ``preset`` on ``model``."""

    model: str = "mlp"
    protocol: str = "client-scored"
    preset: str = "strict"


def round_configs(spec: RoundSpec, *, clients: int = 10) -> tuple[Any, Any]:
    """(plaintext config, encrypted config) of one FedAtt round, as ``benchmarks/test_round_bench.py`` runs it."""
    from fedattn.simulation import SimulationConfig

    options = {"score": "l2_squared"} if spec.protocol == "server-scored" else {}
    common: dict[str, Any] = dict(dataset="digits", model=spec.model, clients=clients, rounds=1, aggregation="fedatt",
                  rule_options=options, seed=0)
    return (SimulationConfig(**common, protection="plain"),
            SimulationConfig(**common, protection="ckks", protocol=spec.protocol, preset=spec.preset))


def time_round(config: Any, *, dataset: Any, keys: Any, repeats: int, warmup: bool = True) -> tuple[float, Any]:
    """Best wall time of ``repeats`` one-round simulations (after a warm-up run) and the last result."""
    from fedattn.simulation import run_simulation

    if warmup:
        run_simulation(config, dataset=dataset, keys=keys)  # imports, allocator, first-use costs
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run_simulation(config, dataset=dataset, keys=keys)
        best = min(best, time.perf_counter() - t0)
    return best, result


def time_rounds(config: Any, *, dataset: Any, keys: Any) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each round after the first of one run of ``config``: from the end of
    one round to the end of the next (the federation's set-up and its first round left out)."""
    from fedattn.simulation import run_simulation

    marks: list[tuple[float, float]] = []
    run_simulation(config, dataset=dataset, keys=keys,
                   on_round=lambda _record: marks.append((time.perf_counter(), time.process_time())))
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]


def steady_figures(plain: Sequence[Sequence[tuple[float, float]]],
                   encrypted: Sequence[Sequence[tuple[float, float]]]) -> dict[str, Any]:
    """Medians of the per-round (wall, CPU) times of the repetitions ``plain[i]``, ``encrypted[i]``
    (lists of rounds, as :func:`time_rounds` gives), the ratio of the wall medians, and its lowest
    and highest value among the repetitions (each repetition's median encrypted round over its
    median plaintext round)."""
    if not plain or len(plain) != len(encrypted) or not all(plain) or not all(encrypted):
        raise ValueError("plain and encrypted need the same number of repetitions, each with at least one round")

    def median(reps: Sequence[Sequence[tuple[float, float]]], i: int) -> float:
        return statistics.median(r[i] for rep in reps for r in rep)

    per_rep = [median([e], 0) / median([p], 0) for p, e in zip(plain, encrypted)]
    plain_s, encrypted_s = median(plain, 0), median(encrypted, 0)
    return {"plain_s": plain_s, "plain_cpu_s": median(plain, 1), "encrypted_s": encrypted_s,
            "encrypted_cpu_s": median(encrypted, 1), "ratio": encrypted_s / plain_s,
            "ratio_range": [min(per_rep), max(per_rep)], "rounds_timed": sum(len(rep) for rep in encrypted)}


def measure_round(spec: RoundSpec, *, repeats: int = 3, clients: int = 10) -> dict[str, Any]:
    import secagg
    from fedattn.data import load_dataset
    from fedattn.simulation import run_simulation

    data = load_dataset("digits", seed=0)
    plain_cfg, enc_cfg = round_configs(spec, clients=clients)
    keys = secagg.generate_keys(preset=spec.preset)
    if spec.protocol == "server-scored":  # ~25 s a round: one run, as the pytest suite does
        plain, _ = time_round(plain_cfg, dataset=data, keys=None, repeats=repeats)
        enc, result = time_round(enc_cfg, dataset=data, keys=keys, repeats=1, warmup=False)
        return round_row(spec, plain_s=plain, encrypted_s=enc, result=result)
    # alternate plaintext and encrypted runs (each warmed up once): load on a shared machine then
    # hits both alike
    best = {"plain": float("inf"), "ckks": float("inf")}
    steady: dict[str, list[list[tuple[float, float]]]] = {"plain": [], "ckks": []}
    for r in range(repeats + 1):
        for cfg, k in ((plain_cfg, None), (enc_cfg, keys)):
            t0 = time.perf_counter()
            result = run_simulation(cfg, dataset=data, keys=k)
            if r > 0:
                best[cfg.protection] = min(best[cfg.protection], time.perf_counter() - t0)
                steady[cfg.protection].append(time_rounds(dataclasses.replace(cfg, rounds=STEADY_ROUNDS),
                                                          dataset=data, keys=k))
    return round_row(spec, plain_s=best["plain"], encrypted_s=best["ckks"], result=result,
                     steady=steady_figures(steady["plain"], steady["ckks"]) | {"rounds_per_run": STEADY_ROUNDS})


def round_row(spec: RoundSpec, *, plain_s: float, encrypted_s: float, result: Any,
              steady: dict[str, Any] | None = None) -> dict[str, Any]:
    """The figures of one round-level comparison (``result``: the encrypted run's; ``steady``:
    :func:`steady_figures` of several-round runs, where measured)."""
    clients = result.config.clients
    return {**asdict(spec), "clients": clients, "plain_s": plain_s, "encrypted_s": encrypted_s,
            "ratio": encrypted_s / plain_s, "bytes_per_client": result.rounds[0].bytes_sent / clients,
            "steady": steady}
