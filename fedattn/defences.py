"""What a client checks about the model a server sends, and the hooks through which a simulated
server lies.

Secure aggregation hides single updates from a server that follows the protocol. A malicious
server does not need single updates: it chooses the model its clients train, and a model can be
built to copy training examples into the aggregate (imprint layers, trap weights), or be sent to
one client only (model inconsistency). Three checks stop these, each a switch the clients control
(``SimulationConfig.defences``):

* ``"commitments"`` - every upload's signed receipt commits to the model and configuration it was
  trained on, and a key holder releases only a set whose commitments are all equal (and its own):
  different models for different clients are refused. Off, a receipt commits to the configuration
  only, as in secure-aggregation protocols that do not bind the model.
* ``"architecture"`` - the architecture is pinned at enrolment: a client trains its own model class
  and refuses a server that serves another one (:class:`fedattn.errors.ArchitectureMismatchError`).
  Off, a client builds whatever model the server serves (on Flower, the SuperLink serves the
  ClientApp's code unless the deployment pins the app).
* ``"provenance"`` - a client recomputes the global model itself, from the committed
  initialisation and every release a key holder signed since (the rule's public step, any server
  noise from the public seed), and trains only on exactly that model
  (:class:`fedattn.errors.ProvenanceError`). This stops every attack that crafts weights; it needs
  an encrypted protocol, whose releases are signed, and every client must see every release.

:class:`ServerAdversary` is the server's side in a simulation: the default is honest; attacks
(:mod:`attacks.malicious`) override its hooks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

import secagg

from .errors import ProvenanceError

if TYPE_CHECKING:
    from .rules import AggregationRule

__all__ = ["DEFENCES", "DEFAULT_DEFENCES", "ServedModel", "ServerAdversary", "architecture_fingerprint", "Provenance"]

DEFENCES = ("commitments", "architecture", "provenance")
#: provenance is opt-in: it needs every release delivered to every client
DEFAULT_DEFENCES = ("commitments", "architecture")

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class ServedModel:
    """What a server sends a client when it serves code as well as weights: ``factory`` builds the
    architecture (``None``: the one agreed at enrolment), ``state`` holds its weights."""

    state: Arrays
    factory: Callable[[], nn.Module] | None = None


def architecture_fingerprint(model: nn.Module) -> str:
    """A hash of what makes two models the same architecture: every module's class, in order, and
    every parameter's and buffer's name, shape and dtype (not their values)."""
    h = hashlib.sha256(b"secfl/architecture/v1\x00")
    for name, module in model.named_modules():
        h.update(f"m {name} {type(module).__module__}.{type(module).__qualname__}\n".encode())
    for kind, tensors in (("p", model.named_parameters()), ("b", model.named_buffers())):
        for name, t in tensors:
            h.update(f"{kind} {name} {tuple(t.shape)} {t.dtype}\n".encode())
    return h.hexdigest()


class Provenance:
    """One client's own copy of the global model, advanced by signed releases only.

    Args:
        initial: the committed initialisation (every client builds it from the public seed).
        rule: the aggregation rule, built by the client from the public configuration.
        roster: the client's roster: whose release signatures count.
        run: the run id the releases must be signed for.
        server_rng: the public seed of the server's step in a round (``round -> Generator``).
    """

    def __init__(self, initial: Arrays, *, rule: AggregationRule, roster: secagg.Roster, run: str,
                 server_rng: Callable[[int], np.random.Generator]) -> None:
        self.expected = {n: np.array(a, copy=True) for n, a in initial.items()}
        self.rule, self.roster, self.run, self.server_rng = rule, roster, run, server_rng

    def check(self, received: Arrays) -> None:
        """Raise :class:`ProvenanceError` unless ``received`` is, bit for bit, the model this client
        computed."""
        if list(received) != list(self.expected):
            raise ProvenanceError("the server sent a model with other tensors than the committed one; refused")
        for name, mine in self.expected.items():
            theirs = np.asarray(received[name])
            if theirs.shape != mine.shape or theirs.dtype != mine.dtype or not np.array_equal(theirs, mine):
                raise ProvenanceError(f"the server's {name!r} is not the committed initialisation plus the signed "
                                      "releases: crafted weights; refused")

    def advance(self, round: int, release: secagg.Release | None) -> None:
        """Apply ``round``'s release (``None``: the round was aborted; the model stays) after checking
        its signature against the roster.

        Raises:
            secagg.AuthenticationError, secagg.SignatureError, secagg.ReplayError: the release is not
                a key holder's signed release of this run and round.
        """
        if release is None:
            return
        release.verify(self.roster, run=self.run, round=round)
        values = {n: np.asarray(a, np.float64) for n, a in release.values.items()}
        self.expected = self.rule.apply(self.expected, values, rng=self.server_rng(round))


class ServerAdversary:
    """How a simulated server may deviate from the protocol; the default is honest. Subclass to
    simulate an attack (:mod:`attacks.malicious`); each hook is one thing a real server controls.

    An honest server refuses uploads that commit to another model than the one it sent; a server
    that attacks skips its own checks (``honest_checks = False``), leaving the key holders'.
    """

    honest_checks: bool = True

    def setup(self, federation: Any) -> None:
        """Called once before the first round with the whole :class:`fedattn.simulation.Federation`
        (an attacker may, e.g., raise its own upload size limit)."""

    def model_for(self, client_id: str, round: int, state: Arrays) -> Arrays | ServedModel:
        """The global model as sent to ``client_id`` in ``round`` (weights, or code and weights)."""
        return state

    def round_model(self, round: int, state: Arrays) -> Arrays:
        """The model the server opens the round with: it fixes the layout of the uploads it accepts."""
        return state

    def request(self, round: int, request: bytes, uploads: Sequence[bytes]) -> bytes:
        """The release request actually sent to the key holders (``uploads``: every upload's bytes)."""
        return request

    def apply(self, server: Any, aggregate: Arrays, rng: np.random.Generator) -> None:
        """The server's step with a round's released aggregate."""
        server.apply(aggregate, rng)
