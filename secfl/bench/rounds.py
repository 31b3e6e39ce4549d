"""One federated round on digits, plaintext vs each encrypted protocol, for ``secfl bench`` and
``benchmarks/test_round_bench.py`` (the same configurations and timing in both)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RoundSpec", "round_configs", "time_round", "measure_round", "round_row"]


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
    # alternate plaintext and encrypted rounds (each warmed up once): load on a shared machine then
    # hits both alike
    best = {"plain": float("inf"), "ckks": float("inf")}
    for r in range(repeats + 1):
        for cfg, k in ((plain_cfg, None), (enc_cfg, keys)):
            t0 = time.perf_counter()
            result = run_simulation(cfg, dataset=data, keys=k)
            if r > 0:
                best[cfg.protection] = min(best[cfg.protection], time.perf_counter() - t0)
    return round_row(spec, plain_s=best["plain"], encrypted_s=best["ckks"], result=result)


def round_row(spec: RoundSpec, *, plain_s: float, encrypted_s: float, result: Any) -> dict[str, Any]:
    """The figures of one round-level comparison (``result``: the encrypted run's)."""
    clients = result.config.clients
    return {**asdict(spec), "clients": clients, "plain_s": plain_s, "encrypted_s": encrypted_s,
            "ratio": encrypted_s / plain_s, "bytes_per_client": result.rounds[0].bytes_sent / clients}
