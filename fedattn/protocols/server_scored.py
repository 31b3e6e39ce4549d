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
norms (:func:`clip_layer_norms`) and the key holders check that the released total weight lies in
the range the polynomial can produce.

**What each party sees.** The server: ciphertexts, sizes, layout, contributors; no score, no weight,
no update. A client: the global model. An observer: ciphertexts. Clients cannot misreport a score
(unlike ``client-scored``), but can still send any update within the public norm range. Collusion
of the server with one client (who holds the secret key) decrypts everything.
"""

from __future__ import annotations

import time

import secagg
from secagg.circuit import DEGREE, clip_layer_norms, score_and_combine, weight_polynomial

from ..errors import InvalidConfigError
from ..rules import FedAtt
from .base import ClientMessage, EncryptedProtocol

__all__ = ["ServerScoredProtocol", "weight_polynomial", "clip_layer_norms", "DEGREE"]

class ServerScoredProtocol(EncryptedProtocol):
    """FedAtt (squared-L2 scores) with weights computed by the server on ciphertexts."""

    name = "server-scored"

    def __init__(self, keys: secagg.KeySet, **options) -> None:
        # the server side holds the public half only, a client (on Flower) the secret half only
        preset = (keys.public if keys.public is not None else keys.secret).preset
        if preset.depth < 7 or "galois" not in preset.eval_keys:
            raise InvalidConfigError(
                f"server-scored aggregation needs the 'deep' preset (depth 7, Galois keys), not {preset.name!r}"
            )
        super().__init__(keys, **options)

    @staticmethod
    def _check_rule(rule) -> FedAtt:
        if not isinstance(rule, FedAtt) or rule.score != "l2_squared":
            raise InvalidConfigError("server-scored aggregation computes FedAtt with score='l2_squared' only")
        if rule.score_range[0] != 0.0:
            raise InvalidConfigError("server-scored FedAtt needs score_range (0, hi)")
        return rule

    def client_message(self, update, *, rule, num_samples, reference, round, client_id, commitment=None):
        rule = self._check_rule(rule)
        t0 = time.perf_counter()
        clipped = clip_layer_norms(dict(update), rule.score_range[1])
        enc = secagg.encrypt_update(clipped, self.keys.secret, round=round, client_id=client_id)
        payload = self._envelope(enc.to_bytes(), client_id=client_id, round=round, commitment=commitment)
        return ClientMessage(client_id, payload, num_samples, seconds_encrypt=time.perf_counter() - t0)

    def combine(self, received, *, rule, round):
        # every client's scores need its own ciphertexts, so these are all loaded (no streaming fold)
        kept, dropped = [], {}
        for u in received:
            try:
                u.load(self.keys.public)
                kept.append(u)
            except (secagg.SecAggError, ValueError) as exc:
                dropped[u.client_id] = f"{type(exc).__name__}: {exc}"
        if not kept:
            raise secagg.EmptyAggregationError(f"round {round}: no upload survived loading")
        rule = self._check_rule(rule)
        return score_and_combine(kept, self.keys.public, hi=rule.score_range[1], temperature=rule.temperature), dropped
