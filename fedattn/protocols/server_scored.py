"""Server-scored attention: the server computes each client's weights on ciphertexts.

Clients send ``Enc(d)`` only (preset ``deep``). For every client ``k`` and layer ``l`` the server
computes, without any secret key:

1. ``u_kl`` - the layer's values of ``d_k`` cut out of the packed ciphertexts with constant masks
   (``u = M1 * z + M2 * conj(z)``, exact even where a layer boundary splits a complex slot);
2. ``t_kl = ||d_kl||^2 / hi`` - squares via ``u * conj(u)``, then a rotate-and-sum over the slots;
3. ``omega_kl = p(t_kl)`` with ``p`` the degree-7 Chebyshev fit of ``exp(hi * (t - 1/2) / tau)``
   on ``[0, 1]`` (FedAtt with squared-L2 scores, see below);
4. ``sum_k omega_kl * u_kl`` and ``sum_k omega_kl``, sent to the key holders, who release both
   (noise-flooded) and divide - the same ratio form as the client-scored protocol.

Depth: masks 1, squares 1, polynomial 4 (Paterson-Stockmeyer with ``t^2, t^3, t^4``), product 1:
7 levels, exactly the ``deep`` preset's (N = 16384, 60 + 7 x 40 + 60 bits, 128-bit secure). The
server uses the relinearisation key and 14 Galois keys (power-of-two rotations, conjugation).

**Scores.** The paper's FedAtt score is ``||d||``; ``exp(sqrt(.))`` has a cusp at 0 that a degree-7
polynomial fits with 24 % relative error, so this protocol scores with ``||d||^2`` (``FedAtt(score=
"l2_squared")``), whose weight function it fits within 0.09 % (measured on 20001 points of
``[0, 1]`` for ``hi = 4, tau = 1``; :func:`weight_polynomial` reports it for any range). The input
range is public: ``||d_l||^2`` in ``[0, hi]``. A client whose layer norm exceeds it makes ``t > 1``
where the polynomial is meaningless; the server cannot clip, so honest clients clip their layer
norms (:func:`clip_layer_norms`) and the key holder refuses a release whose (flooded) total weight
exceeds ``members x`` :func:`secagg.circuit.omega_max`.

**Honest-but-curious server only.** A key holder cannot rebuild the circuit's output (it would have
to rerun the circuit on every upload), so it cannot tell the real output from a ciphertext the
server crafted to learn the secret key. Key holders of this protocol are configured with
``trust_server_circuit=True`` (:meth:`ServerScoredProtocol.key_holder_options`); against a
malicious server use the client-scored protocol, whose key holders decrypt only what they rebuild.

**What each party sees.** The server: ciphertexts, sizes, layout, contributors; no score, no weight,
no update. A client: the global model. An observer: ciphertexts. Clients cannot misreport a score
(unlike ``client-scored``), but can still send any update within the public norm range. Collusion
of the server with one client (who holds the secret key) decrypts everything.
"""

from __future__ import annotations

import time

import secagg
from secagg.circuit import DEGREE, clip_layer_norms, omega_max, weight_polynomial

from ..errors import InvalidConfigError
from ..round import ClientMessage
from ..rules import AggregationRule, FedAtt
from .base import EncryptedProtocol

__all__ = ["ServerScoredProtocol", "weight_polynomial", "clip_layer_norms", "DEGREE"]

class ServerScoredProtocol(EncryptedProtocol):
    """FedAtt (squared-L2 scores) with weights computed by the server on ciphertexts."""

    name = "server-scored"
    needs_uploads = True

    def __init__(self, rule: AggregationRule) -> None:
        if not isinstance(rule, FedAtt) or rule.score != "l2_squared":
            raise InvalidConfigError("server-scored aggregation computes FedAtt with score='l2_squared' only")
        if rule.score_range[0] != 0.0:
            raise InvalidConfigError("server-scored FedAtt needs score_range (0, hi)")
        super().__init__(rule)
        self.fedatt: FedAtt = rule

    def check_preset(self, preset: secagg.Preset) -> None:
        if preset.depth < 7 or "galois" not in preset.eval_keys:
            raise InvalidConfigError(
                f"server-scored aggregation needs the 'deep' preset (depth 7, Galois keys), not {preset.name!r}")

    def key_holder_options(self) -> dict[str, object]:
        # the circuit's output cannot be rebuilt by a key holder: honest-but-curious server only
        return {"trust_server_circuit": True,
                "max_weight": omega_max(self.fedatt.score_range[1], self.fedatt.temperature)}

    def client_message(self, update, *, client_id, uploader, num_samples, reference, run, round, commitment):
        if uploader is None:
            raise secagg.MissingSecretKeyError(f"client {client_id!r} encrypts with its Uploader")
        t0 = time.perf_counter()
        clipped = clip_layer_norms(dict(update), self.fedatt.score_range[1])
        payload = uploader.upload(clipped, run=run, round=round, commitment=commitment)
        return ClientMessage(client_id, payload, num_samples, seconds_encrypt=time.perf_counter() - t0)

    def request(self, state, cset, signatures):
        rule = self.fedatt
        return state.circuit_request(cset, signatures, hi=rule.score_range[1], temperature=rule.temperature)
