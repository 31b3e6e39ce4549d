"""A malicious server's attacks through secure aggregation: it chooses the model the clients train,
then reads training examples out of the released aggregate.

Each attack is a server behaviour (a :class:`fedattn.defences.ServerAdversary`) and a recovery
from what the protection lets the server see, written from its paper:

* :class:`ImprintAdversary` - Robbing the Fed (Fowl et al., ICLR 2022). An imprint block in front
  of the agreed model: ``x -> model(x + v * sum_i h_i)``, ``h_i = ReLU(a (w.x - t_i))``. Every row
  measures the same random direction ``w``; the thresholds ``t_i`` sit at quantiles of ``w.x`` over
  the server's public data, so an example switches on the rows below its measurement. The block
  gives every row the same downstream gradient, so for an example alone between ``t_i`` and
  ``t_{i+1}``, ``(dW_i - dW_{i+1}) / (db_i - db_{i+1})`` is that example, exactly, whatever the
  sum over the other clients. ``per_client=True`` is the LOKI-style variant (Zhao et al., S&P
  2024): each client gets its own block of rows (the others' never fire), so no two clients'
  examples share a bin - and every client gets a different model.
* :class:`TrapAdversary` - When the Curious Abandon Honesty (Boenisch et al., EuroS&P 2023),
  inside the agreed MLP: first-layer rows point in random directions, each bias set so that the
  neuron fires for a fraction ``fires`` of the public data (about one example a round); where one
  example fired a neuron, ``dW_i / db_i`` is that example. ``target=`` is model inconsistency
  (Pasquini et al., CCS 2022): the target gets the traps, every other client a first layer that
  never fires, so the aggregate's first layer is the target's update alone.
* :class:`ReleaseAdversary` - against the key holder instead of the clients: it asks for the
  decryption of ``(0, c)`` (zeros for the summed first halves) or of one upload relabelled as the
  sum of all.

Scoring (:func:`recovered_share`): an original counts as recovered when some candidate reaches
:data:`THRESHOLD_DB` PSNR after a **per-image scale fitted to that original** (attacker-favourable,
like the matching): FedAtt weighs a layer's weight and bias tensors separately, so a recovered
image is the example times an unknown positive factor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

import secagg.unsafe
from fedattn.defences import ServedModel, ServerAdversary

__all__ = ["ImprintedModel", "ImprintAdversary", "TrapAdversary", "ReleaseAdversary", "recovered_share",
           "THRESHOLD_DB"]

Arrays = Mapping[str, np.ndarray]
#: PSNR (data range 1) at which an image counts as recovered
THRESHOLD_DB = 30.0
_NEVER = 1e6  # a threshold no input reaches: the row never fires


class ImprintedModel(nn.Module):
    """The agreed model behind an imprint block (the server's code)."""

    def __init__(self, base: nn.Module, input_shape: tuple[int, ...], width: int) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.encoder = nn.Linear(math.prod(input_shape), width)
        self.register_buffer("direction", torch.zeros(math.prod(input_shape)))
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.relu(self.encoder(x.flatten(1))).sum(1, keepdim=True)
        direction: torch.Tensor = self.direction  # type: ignore[assignment]  # a registered buffer
        return self.base(x + (total * direction).view(-1, *self.input_shape))


class _Attacker(ServerAdversary):
    honest_checks = False  # an attacking server skips its own commitment check

    def __init__(self) -> None:
        self.released: dict[str, np.ndarray] | None = None

    def apply(self, server: Any, aggregate: Arrays, rng: np.random.Generator) -> None:
        self.released = {n: np.asarray(a) for n, a in aggregate.items()}  # it steals; the model stays


class ImprintAdversary(_Attacker):
    """Robbing the Fed's imprint block, for every client alike or (``per_client``) one block each.

    Args:
        public: the server's own images (it knows the data's distribution, not the clients' data).
        width: rows of the block (the paper's regime: at least twice the round's examples).
        factory: the agreed model's architecture.
        clients: the client ids, in order (``per_client``: client ``j`` gets rows ``j*width/n ...``).
    """

    def __init__(self, *, public: np.ndarray, width: int, factory: Callable[[], nn.Module],
                 clients: Sequence[str], per_client: bool = False, gain: float = 100.0, seed: int = 0) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self.input_shape = tuple(public.shape[1:])
        d = math.prod(self.input_shape)
        self.w = rng.normal(size=d) / math.sqrt(d)
        m = public.reshape(len(public), d).astype(np.float64) @ self.w
        # the rows' gradients do not depend on their scale, the downstream gradient grows with v: a
        # small scale and a large v keep the model's input near x and lift every example above the
        # release's rounding (``gain``)
        self.scale = 1.0 / (width * m.std() * gain)
        self.v = rng.normal(size=d) * 2.0 * gain / math.sqrt(d)
        self.width, self.factory, self.clients, self.per_client = width, factory, list(clients), per_client
        n = len(self.clients) if per_client else 1
        per = width // n
        self.blocks = [(j * per, (j + 1) * per if j < n - 1 else width) for j in range(n)]
        self.thresholds = np.full((n, width), _NEVER)
        for j, (lo, hi) in enumerate(self.blocks):
            t = np.quantile(m, np.arange(hi - lo) / (hi - lo))
            t[0] -= m.std()  # the lowest bin also takes the examples darker than any public one
            self.thresholds[j, lo:hi] = t

    def setup(self, federation: Any) -> None:
        if federation.server_role.aggregator is not None:  # its own upload limit, for its own layer
            federation.server_role.aggregator.max_payload_bytes = None

    def _factory(self) -> nn.Module:
        return ImprintedModel(self.factory(), self.input_shape, self.width)

    def _state(self, base: Arrays, block: int) -> dict[str, np.ndarray]:
        d = len(self.w)
        crafted = {"encoder.weight": np.tile(self.scale * self.w, (self.width, 1)),
                   "encoder.bias": -self.scale * self.thresholds[block], "direction": self.v}
        out = {n: np.asarray(a, np.float32) for n, a in crafted.items()}
        assert out["encoder.weight"].shape == (self.width, d)
        return {**out, **{f"base.{n}": a for n, a in base.items()}}

    def model_for(self, client_id: str, round: int, state: Arrays) -> ServedModel:
        block = self.clients.index(client_id) if self.per_client else 0
        return ServedModel(state=self._state(state, block), factory=self._factory)

    def round_model(self, round: int, state: Arrays) -> Arrays:
        return self._state(state, 0)

    def candidates(self, aggregate: Arrays) -> np.ndarray:
        """The examples read out of the released aggregate: one candidate per bin."""
        dw = np.asarray(aggregate["encoder.weight"], np.float64)
        db = np.asarray(aggregate["encoder.bias"], np.float64)
        out = []
        for lo, hi in self.blocks:
            w, b = dw[lo:hi], db[lo:hi]
            diff_w = w - np.vstack([w[1:], np.zeros_like(w[:1])])
            diff_b = b - np.append(b[1:], 0.0)
            keep = np.abs(diff_b) > 0
            out.append(diff_w[keep] / diff_b[keep, None])
        return np.vstack(out).reshape(-1, *self.input_shape)


class TrapAdversary(_Attacker):
    """Trap weights in the agreed MLP's first layer; with ``target``, for one client only.

    Args:
        public: the server's own images.
        fires: the share of inputs each trap neuron fires for (about one over the round's examples).
        layer, head: the first layer's and the next layer's parameter prefixes.
        boost: factor on the next layer's weights (a larger gradient through each trap).
    """

    def __init__(self, *, public: np.ndarray, fires: float, layer: str = "net.1", head: str = "net.3",
                 boost: float = 10.0, target: str | None = None, seed: int = 0) -> None:
        super().__init__()
        self.public = public.reshape(len(public), -1).astype(np.float64)
        self.fires, self.layer, self.head, self.boost, self.target = fires, layer, head, boost, target
        self.rng = np.random.default_rng(seed)
        self.input_shape = tuple(public.shape[1:])

    def _trap(self, state: Arrays) -> dict[str, np.ndarray]:
        w = np.asarray(state[f"{self.layer}.weight"])
        rows = self.rng.normal(size=w.shape) / math.sqrt(w.shape[1])
        bias = -np.quantile(self.public @ rows.T, 1.0 - self.fires, axis=0)
        return {**state, f"{self.layer}.weight": rows.astype(np.float32), f"{self.layer}.bias": bias.astype(np.float32),
                f"{self.head}.weight": (np.asarray(state[f"{self.head}.weight"]) * self.boost).astype(np.float32)}

    def model_for(self, client_id: str, round: int, state: Arrays) -> Arrays:
        if not hasattr(self, "crafted"):
            self.crafted = self._trap(state)
        if self.target is None or client_id == self.target:
            return self.crafted
        dead = np.full_like(np.asarray(state[f"{self.layer}.bias"]), -_NEVER)
        return {**self.crafted, f"{self.layer}.bias": dead}

    def round_model(self, round: int, state: Arrays) -> Arrays:
        return self.model_for(self.target or "", round, state)

    def candidates(self, aggregate: Arrays) -> np.ndarray:
        dw = np.asarray(aggregate[f"{self.layer}.weight"], np.float64)
        db = np.asarray(aggregate[f"{self.layer}.bias"], np.float64)
        keep = np.abs(db) > 0
        return (dw[keep] / db[keep, None]).reshape(-1, *self.input_shape)


class ReleaseAdversary(_Attacker):
    """Asks the key holder for ``(0, c)`` (``kind="zero"``) or for the first upload relabelled as
    the sum of every member (``kind="relabel"``); the clients get the honest model."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in ("zero", "relabel"):
            raise ValueError(f"kind must be 'zero' or 'relabel', got {kind!r}")
        self.kind = kind
        self.members = 0

    def setup(self, federation: Any) -> None:
        self.members = len(federation.parties)

    def request(self, round: int, request: bytes, uploads: Sequence[bytes]) -> bytes:
        one = secagg.unsafe.upload_ciphertexts(uploads[0])
        body = bytes(len(one)) if self.kind == "zero" else one
        return secagg.unsafe.forged_request(request, body=body, max_members=self.members)


def recovered_share(candidates: np.ndarray, originals: np.ndarray, *, threshold_db: float = THRESHOLD_DB
                    ) -> tuple[float, np.ndarray]:
    """The share of ``originals`` some candidate recovers at ``threshold_db`` or more, and each
    original's best PSNR, after fitting each candidate's scale to the original (positive only)."""
    o = originals.reshape(len(originals), -1).astype(np.float64)
    if len(candidates) == 0:
        return 0.0, np.zeros(len(o))
    c = candidates.reshape(len(candidates), -1).astype(np.float64)
    c = c[np.all(np.isfinite(c), axis=1) & ((c * c).sum(1) > 0)]
    if len(c) == 0:
        return 0.0, np.zeros(len(o))
    dot = o @ c.T
    explained = np.where(dot > 0, dot ** 2 / (c * c).sum(1)[None, :], 0.0)
    mse = np.maximum((o * o).sum(1)[:, None] - explained, 0.0).min(1) / o.shape[1]
    psnr = 10 * np.log10(1.0 / np.maximum(mse, 1e-12))
    return float(np.mean(psnr >= threshold_db)), psnr
