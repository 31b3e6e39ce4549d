"""Differential privacy for the simulation: sample-level DP-SGD (Opacus) and client-level DP.

**Sample-level** (``mode="sample"``): each client trains with Opacus DP-SGD (per-sample clipping to
``clip_norm``, Gaussian noise ``noise_multiplier * clip_norm``, Poisson sampling). Each client keeps
one Opacus accountant for the whole run, handed to every round's ``PrivacyEngine``, so epsilon
composes across rounds (a fresh ``make_private`` per round would restart it at zero). Reported:
the largest epsilon over clients at ``delta``. The noise is drawn from seeded generators so that
runs reproduce; that is fine for audits and experiments, not for a deployment (use Opacus'
``secure_mode`` there).

**Client-level** (``mode="client"``): each client clips its whole update to L2 norm ``clip_norm``
and adds Gaussian noise of std ``noise_multiplier * clip_norm / sqrt(m)`` before encrypting, where
``m`` is the number of clients sampled that round; the sum of ``m`` updates then carries noise of
std ``noise_multiplier * clip_norm`` (distributed noise: no party ever sees an un-noised sum, and
the server sees only the sum). Accounting: one sampled Gaussian mechanism per round with sampling
rate ``m / clients`` and the noise multiplier actually present among the survivors
(``noise_multiplier * sqrt(survivors / m)``: dropouts remove their share of the noise), in an
Opacus RDP accountant. It is defined for equal client weights: with attention weights a client's
influence depends on data-dependent weights, so ``mode="client"`` requires ``fedavg`` with
``equal_weights`` and the denominator (the number of survivors) is public. Assumes honest clients:
a client that skips its noise share lowers the protection.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant, create_accountant

from .errors import PrivacyConfigError

__all__ = ["DPConfig", "SampleLevelDP", "ClientLevelDP"]

MODES = ("sample", "client")


@dataclass(frozen=True)
class DPConfig:
    """Differential-privacy options (validated).

    Args:
        mode: ``"sample"`` (DP-SGD on each client) or ``"client"`` (clipped, noised updates).
        noise_multiplier: Gaussian noise std in units of ``clip_norm`` (> 0).
        clip_norm: per-sample gradient bound (sample) or per-update bound (client).
        delta: target delta, in (0, 1).
        accountant: Opacus accountant for sample-level DP (``prv``, ``rdp`` or ``gdp``).
    """

    mode: str = "sample"
    noise_multiplier: float = 1.0
    clip_norm: float = 1.0
    delta: float = 1e-5
    accountant: str = "prv"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PrivacyConfigError(f"DP mode must be one of {MODES}, got {self.mode!r}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise PrivacyConfigError(f"noise_multiplier must be a positive number, got {self.noise_multiplier}")
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise PrivacyConfigError(f"clip_norm must be a positive number, got {self.clip_norm}")
        if not 0 < self.delta < 1:
            raise PrivacyConfigError(f"delta must lie in (0, 1), got {self.delta}; use e.g. 1/(10 * samples)")
        if self.accountant not in ("prv", "rdp", "gdp"):
            raise PrivacyConfigError(f"accountant must be prv, rdp or gdp, got {self.accountant!r}")


class SampleLevelDP:
    """Per-client Opacus accountants that persist across rounds."""

    def __init__(self, config: DPConfig) -> None:
        self.config = config
        self._accountants: dict[str, Any] = {}

    def make_private(self, client_id: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     loader: torch.utils.data.DataLoader, *, noise_seed: int):
        """Wrap one round's local training; the client's accountant keeps counting."""
        accountant = self._accountants.setdefault(client_id, create_accountant(self.config.accountant))
        gen = torch.Generator().manual_seed(noise_seed)
        with warnings.catch_warnings():
            # seeded noise is deliberate (reproducible runs); Opacus warns about it on every call
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant=self.config.accountant)
            engine.accountant = accountant  # compose with every earlier round of this client
            return engine.make_private(module=model, optimizer=optimizer, data_loader=loader,
                                       noise_multiplier=self.config.noise_multiplier,
                                       max_grad_norm=self.config.clip_norm, poisson_sampling=True,
                                       noise_generator=gen)

    def history(self, client_id: str) -> list[tuple[float, float, int]]:
        """The client's accountant history, ``(noise_multiplier, sample_rate, steps)`` per entry.

        Enough to rebuild the accountant in another process (a Flower client keeps it in
        ``context.state`` between rounds); empty before the client's first round.
        """
        accountant = self._accountants.get(client_id)
        return [tuple(h) for h in accountant.history] if accountant is not None else []

    def restore(self, client_id: str, history: list) -> None:
        """Continue counting from an earlier :meth:`history` of the same accountant kind."""
        entries = []
        for entry in history:
            if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
                raise PrivacyConfigError(f"an accountant history entry is (noise_multiplier, sample_rate, steps), got {entry!r}")
            sigma, rate, steps = float(entry[0]), float(entry[1]), int(entry[2])
            if not (sigma > 0 and 0 < rate <= 1 and steps > 0):
                raise PrivacyConfigError(f"accountant history entry {entry!r} is out of range")
            entries.append((sigma, rate, steps))
        accountant = create_accountant(self.config.accountant)
        accountant.history = entries
        self._accountants[client_id] = accountant

    def epsilon(self, client_id: str | None = None) -> float:
        """Epsilon at ``delta`` of one client, or the largest over all clients (0 before training)."""
        ids = [client_id] if client_id is not None else list(self._accountants)
        eps = [self._accountants[c].get_epsilon(self.config.delta) for c in ids if c in self._accountants
               and self._accountants[c].history]
        return max(eps, default=0.0)


class ClientLevelDP:
    """Clip and noise whole updates; account one sampled Gaussian mechanism per round."""

    def __init__(self, config: DPConfig, *, n_clients: int) -> None:
        self.config = config
        self.n_clients = n_clients
        self.accountant = RDPAccountant()

    def privatise(self, update: dict[str, np.ndarray], *, sampled: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], float]:
        """Clip ``update`` to ``clip_norm`` and add this client's share of the noise."""
        norm = math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in update.values()))
        factor = min(1.0, self.config.clip_norm / norm) if norm > 0 else 1.0
        std = self.config.noise_multiplier * self.config.clip_norm / math.sqrt(sampled)
        out = {n: (a * factor + rng.normal(0.0, std, a.shape)).astype(a.dtype) for n, a in update.items()}
        return out, norm

    def account_round(self, *, sampled: int, survivors: int) -> None:
        effective = self.config.noise_multiplier * math.sqrt(survivors / sampled)
        self.accountant.step(noise_multiplier=effective, sample_rate=sampled / self.n_clients)

    def epsilon(self) -> float:
        return self.accountant.get_epsilon(self.config.delta) if self.accountant.history else 0.0
