"""Differential privacy for the simulation: sample-level DP-SGD (Opacus) and client-level DP.

**Sample-level** (``mode="sample"``): each client trains with Opacus DP-SGD (per-sample clipping to
``clip_norm``, Gaussian noise ``noise_multiplier * clip_norm``, Poisson sampling). Each client keeps
one Opacus accountant for the whole run, handed to every round's ``PrivacyEngine``, so epsilon
composes across rounds (a fresh ``make_private`` per round would restart it at zero). Reported:
the largest epsilon over clients at ``delta``. Every sampled step is counted, empty Poisson
batches included. Seeded simulations seed the noise so that runs reproduce; elsewhere it is seeded
from the operating system (:meth:`SampleLevelDP.make_private`).

**Client-level** (``mode="client"``): each client clips its whole update to L2 norm ``clip_norm``
and adds Gaussian noise of std ``noise_multiplier * clip_norm / sqrt(m)`` before encrypting, where
``m`` is the number of clients sampled that round; the sum of ``m`` updates then carries noise of
std ``noise_multiplier * clip_norm`` (distributed noise: no party ever sees an un-noised sum, and
the server sees only the sum). Accounting: one Gaussian mechanism per round with the noise
multiplier actually present among the survivors (``noise_multiplier * sqrt(survivors / m)``:
dropouts remove their share of the noise), in the configured accountant, **without amplification
by client sampling**: the server sees who uploaded, so participation is not secret, and the
reported epsilon is that of a client in every round. It is defined for equal client weights:
with attention weights a client's influence depends on data-dependent weights, so
``mode="client"`` requires ``fedavg`` with ``equal_weights`` and the denominator (the number of
survivors) is public. Assumes honest clients: a client that skips its noise share lowers the
protection.

**Neighbouring relation.** Every epsilon here is for *add or remove* one unit (one example for
DP-SGD, one client's whole update for client-level DP). :meth:`SampleLevelDP.epsilon` and
:meth:`ClientLevelDP.epsilon` also give it for *replace one* (twice the sensitivity: half the
noise multiplier), the relation a per-example attack that swaps an example for another tests.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def _import_opacus() -> None:
    """Import Opacus without the root logging handler it installs (``logging.basicConfig`` in
    ``opacus.utils.module_utils``): a library must leave logging to the application, and that
    handler printed every log line of a Flower run twice."""
    root = logging.getLogger()
    before = list(root.handlers)
    import opacus  # noqa: F401

    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)


_import_opacus()
from opacus import PrivacyEngine  # noqa: E402 - after the handler is removed
from opacus.accountants import create_accountant  # noqa: E402

from ._validation import one_of, positive_float, probability  # noqa: E402
from .errors import PrivacyConfigError  # noqa: E402
from .training import MakePrivate  # noqa: E402

__all__ = ["DPConfig", "SampleLevelDP", "ClientLevelDP", "clip_update", "update_norm", "epsilon_of", "RELATIONS"]

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
        one_of("DP mode", self.mode, MODES, error=PrivacyConfigError)
        positive_float("noise_multiplier", self.noise_multiplier, error=PrivacyConfigError)
        positive_float("clip_norm", self.clip_norm, error=PrivacyConfigError)
        if probability("delta", self.delta, error=PrivacyConfigError) == 0:
            raise PrivacyConfigError(f"delta must lie in (0, 1), got {self.delta}; use e.g. 1/(10 * samples)")
        one_of("accountant", self.accountant, ("prv", "rdp", "gdp"), error=PrivacyConfigError)


def update_norm(update: Mapping[str, np.ndarray]) -> float:
    """The L2 norm of a whole update (all arrays together)."""
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in update.values()))


def clip_update(update: Mapping[str, np.ndarray], max_norm: float) -> tuple[dict[str, np.ndarray], float]:
    """``update`` scaled to L2 norm at most ``max_norm`` (dtypes kept), and its norm before clipping.

    The one client-level clipping in secfl: client-level DP and the audit's DP views both use it.
    """
    norm = update_norm(update)
    factor = min(1.0, max_norm / norm) if norm > 0 else 1.0
    return {n: (np.asarray(a) * factor).astype(np.asarray(a).dtype) for n, a in update.items()}, norm


class SampleLevelDP:
    """Per-client Opacus accountants that persist across rounds."""

    def __init__(self, config: DPConfig) -> None:
        self.config = config
        self._accountants: dict[str, Any] = {}

    def _accountant(self, client_id: str) -> Any:
        return self._accountants.setdefault(client_id, create_accountant(self.config.accountant))

    def make_private(self, client_id: str, *, noise_seed: int | None) -> MakePrivate:
        """What :func:`fedattn.training.train_epochs` calls to wrap one round of ``client_id``'s local
        training: DP-SGD with Poisson sampling, continuing the client's accountant.

        ``noise_seed`` seeds Opacus' noise (a labelled, seeded simulation); ``None`` seeds it from the
        operating system, so that no other party can know it. (Opacus' ``secure_mode`` would draw
        every sample from ``/dev/urandom`` but needs ``torchcsprng``, which has no build for current
        torch: the generator here is torch's Mersenne Twister, seeded with 64 OS-random bits.)
        """
        accountant = self._accountant(client_id)

        def wrap(model: torch.nn.Module, optimizer: Any, loader: Any) -> tuple[torch.nn.Module, Any, Any]:
            engine = PrivacyEngine(accountant=self.config.accountant)
            engine.accountant = accountant  # compose with every earlier round of this client
            seed = noise_seed if noise_seed is not None else int.from_bytes(os.urandom(8), "little")
            generator = torch.Generator().manual_seed(seed)
            module, optimizer, loader = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=self.config.noise_multiplier,
                max_grad_norm=self.config.clip_norm, poisson_sampling=True, noise_generator=generator)
            return module, optimizer, loader

        return wrap

    def state(self, client_id: str) -> dict[str, Any]:
        """The client's accountant state (Opacus' ``state_dict``: its history and mechanism), enough to
        continue counting in another process (a Flower client keeps it in ``context.state``)."""
        state = dict(self._accountant(client_id).state_dict())
        state["history"] = [list(h) for h in state["history"]]
        return state

    def restore(self, client_id: str, state: Mapping[str, Any]) -> None:
        """Continue counting from an earlier :meth:`state` of the same accountant kind.

        Raises:
            PrivacyConfigError: a state of another accountant, or entries out of range.
        """
        accountant = create_accountant(self.config.accountant)
        history = state.get("history") if isinstance(state, Mapping) else None
        if not isinstance(history, list):
            raise PrivacyConfigError("an accountant state holds a 'history' list")
        entries = []
        for entry in history:
            if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
                raise PrivacyConfigError(f"an accountant history entry is (noise_multiplier, sample_rate, steps), got {entry!r}")
            sigma, rate, steps = float(entry[0]), float(entry[1]), int(entry[2])
            if not (sigma > 0 and 0 < rate <= 1 and steps > 0):
                raise PrivacyConfigError(f"accountant history entry {entry!r} is out of range")
            entries.append((sigma, rate, steps))
        try:
            accountant.load_state_dict({"history": entries, "mechanism": state.get("mechanism")})
        except ValueError as exc:
            raise PrivacyConfigError(f"this accountant state cannot continue a {self.config.accountant!r} "
                                     f"accountant: {exc}") from None
        self._accountants[client_id] = accountant

    def epsilon(self, client_id: str | None = None, *, relation: str = "add-remove") -> float:
        """Epsilon at ``delta`` of one client, or the largest over all clients (0 before training),
        for adding/removing (or replacing, ``relation="replace-one"``) one example."""
        ids = [client_id] if client_id is not None else list(self._accountants)
        eps = [epsilon_of(self.config.accountant, list(self._accountants[c].history), self.config.delta,
                          relation=relation) for c in ids if c in self._accountants and self._accountants[c].history]
        return max(eps, default=0.0)


RELATIONS = ("add-remove", "replace-one")


def epsilon_of(kind: str, history: list[tuple[float, float, int]], delta: float, *, relation: str = "add-remove") -> float:
    """Epsilon at ``delta`` of a history of ``(noise_multiplier, sample_rate, steps)`` in an accountant
    of ``kind``; ``replace-one`` doubles the sensitivity (halves every noise multiplier)."""
    one_of("relation", relation, RELATIONS, error=PrivacyConfigError)
    if not history:
        return 0.0
    factor = 1.0 if relation == "add-remove" else 0.5
    accountant = create_accountant(kind)
    accountant.history = [(sigma * factor, rate, steps) for sigma, rate, steps in history]
    # sample rate 1 (client-level) takes log(1 - q) = -inf inside the PRV accountant's formulas: harmless
    # there (those terms are masked; PRV then agrees with the exact Gaussian mechanism to 0.1 %)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(accountant.get_epsilon(delta))


class ClientLevelDP:
    """Clip and noise whole updates; account one Gaussian mechanism per round (no sampling amplification)."""

    def __init__(self, config: DPConfig, *, n_clients: int) -> None:
        self.config = config
        self.n_clients = n_clients
        self.history: list[tuple[float, float, int]] = []

    def privatise(self, update: dict[str, np.ndarray], *, sampled: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], float]:
        """Clip ``update`` to ``clip_norm`` and add this client's share of the noise."""
        clipped, norm = clip_update(update, self.config.clip_norm)
        std = self.config.noise_multiplier * self.config.clip_norm / math.sqrt(sampled)
        return {n: (a + rng.normal(0.0, std, a.shape)).astype(a.dtype) for n, a in clipped.items()}, norm

    def account_round(self, *, sampled: int, survivors: int) -> None:
        """One round: the server sees who took part, so no amplification by sampling (rate 1)."""
        effective = self.config.noise_multiplier * math.sqrt(survivors / sampled)
        self.history.append((effective, 1.0, 1))

    def epsilon(self, *, relation: str = "add-remove") -> float:
        """Epsilon at ``delta`` of a client in every round so far, in the configured accountant."""
        return epsilon_of(self.config.accountant, self.history, self.config.delta, relation=relation)
