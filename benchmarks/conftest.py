"""Shared fixtures of the benchmark suites, and a summary table of ratios measured in the same run."""

from __future__ import annotations

import numpy as np
import pytest

#: A ~1M-parameter MLP (784-1024-192-10): realistic layer sizes, one array per tensor.
MLP_1M = {
    "fc1.weight": (1024, 784), "fc1.bias": (1024,),
    "fc2.weight": (192, 1024), "fc2.bias": (192,),
    "fc3.weight": (10, 192), "fc3.bias": (10,),
}
N_CLIENTS = 10

RESULTS: dict[str, dict[str, float]] = {}


def record(method: str, **figures: float) -> None:
    RESULTS.setdefault(method, {}).update(figures)


@pytest.fixture(scope="session")
def client_updates() -> list[dict[str, np.ndarray]]:
    """Ten clients' updates at realistic magnitudes (1e-4..1e-1), float32."""
    rng = np.random.default_rng(0)
    mags = np.geomspace(1e-4, 1e-1, N_CLIENTS)
    return [{n: (rng.standard_normal(s) * m).clip(-1, 1).astype(np.float32) for n, s in MLP_1M.items()} for m in mags]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rounds = {k: v for k, v in RESULTS.items() if k.startswith("round ")}
    if rounds:
        terminalreporter.section("one federated round on digits, 10 clients: encrypted / plaintext (same run)")
        for name, fig in rounds.items():
            terminalreporter.write_line(f"{name:<40} plain {fig['round_plain_s']:.3f} s   encrypted "
                                        f"{fig['round_encrypted_s']:.3f} s   ratio {fig['round_ratio']:.2f}x")
    if not any(not k.startswith("round ") for k in RESULTS):
        return
    n_params = sum(int(np.prod(s)) for s in MLP_1M.values())
    tr = terminalreporter
    tr.section(f"secagg vs baselines, per {n_params:,}-parameter update, {N_CLIENTS} clients (same run)")
    cols = ["encrypt_s", "bytes_x_float32", "server_s", "decrypt_s", "max_abs_error"]
    tr.write_line(f"{'method':<28}" + "".join(f"{c:>18}" for c in cols))
    for method, fig in RESULTS.items():
        if method.startswith("round "):
            continue
        tr.write_line(f"{method:<28}" + "".join(f"{fig.get(c, float('nan')):>18.4g}" for c in cols))
    base = RESULTS.get("flare-tenseal")
    if base:
        for method, fig in RESULTS.items():
            if method == "flare-tenseal" or method.startswith("round "):
                continue
            parts = [f"{c}: {fig[c] / base[c]:.3f}x" for c in ("encrypt_s", "bytes_x_float32", "server_s", "decrypt_s")
                     if c in fig and c in base]
            tr.write_line(f"{method} / flare-tenseal  " + ", ".join(parts))
