"""Helpers shared by the test suites (fixtures live in conftest.py)."""

import numpy as np

import secagg


def random_update(rng: np.random.Generator, magnitude: float = 0.05, shapes=None) -> dict[str, np.ndarray]:
    shapes = shapes or {"conv.weight": (8, 3, 3, 3), "conv.bias": (8,), "fc.weight": (10, 1200), "fc.bias": (10,)}
    return {n: rng.uniform(-magnitude, magnitude, s).astype(np.float32) for n, s in shapes.items()}


def released_tolerance(preset: secagg.Preset, n_clients: int, weight: float = 1.0) -> float:
    """8 sigma of the flooding noise (plus float32 rounding of the result)."""
    return 8 * 2.0**preset.flood_bits * preset.noise_std() * np.sqrt(n_clients) * weight + 1e-6


#: A commitment every test client of a round agrees on (a hex digest, as round_commitment gives).
COMMIT = secagg.round_commitment(0, {}, {"test": True})


class SmallFederation:
    """A few clients, a server and key holders wired with the real roles, for protocol tests.

    Each client has one ledger, shared by its uploader and its key holder, as a real party does.
    ``message(..., fresh=True)`` encrypts with a throwaway ledger instead: what a misbehaving
    client (two uploads for one round) or an attacker replaying one would send. By default all
    clients form one enrolment group.
    """

    def __init__(self, keys, client_ids, *, rule=None, protocol="client-scored",
                 min_contributors=secagg.DEFAULT_MIN_CONTRIBUTORS, group_size=None, max_payload_bytes=None,
                 run="test-run", identities=None):
        from fedattn.protocols import make_protocol
        from fedattn.round import ServerRole
        from fedattn.rules import FedAvg

        client_ids = list(client_ids)
        self.keys, self.run, self.min_contributors = keys, run, min_contributors
        self.protocol = make_protocol(protocol, rule or FedAvg(equal_weights=True))
        self.identities, self.roster = identities or secagg.generate_identities(
            client_ids, group_size=group_size or len(client_ids))
        self.ledgers = {c: secagg.MemoryLedger() for c in client_ids}
        self.server = ServerRole(self.protocol, aggregator=secagg.Aggregator(
            keys.public, roster=self.roster, max_payload_bytes=max_payload_bytes))
        options = self.protocol.key_holder_options()
        self.holders = {c: secagg.KeyHolder(keys.secret, identity=self.identities[c], roster=self.roster,
                                            ledger=self.ledgers[c], min_contributors=min_contributors, release_seed=0,
                                            **options) for c in client_ids}
        self.model = None

    def uploader(self, cid, *, fresh=False):
        ledger = secagg.MemoryLedger() if fresh else self.ledgers[cid]
        return secagg.Uploader(self.keys.secret, identity=self.identities[cid], ledger=ledger, roster=self.roster,
                               min_contributors=self.min_contributors)

    def message(self, cid, update, *, round=0, commitment=COMMIT, num_samples=10, reference=None, fresh=False):
        from fedattn.round import ClientRole

        if self.model is None:
            self.model = {n: np.zeros(np.shape(a), np.asarray(a).dtype) for n, a in update.items()}
        role = ClientRole(self.protocol, client_id=cid, uploader=self.uploader(cid, fresh=fresh))
        return role.message(update, num_samples=num_samples, reference=reference, run=self.run, round=round,
                            commitment=commitment)

    def serve(self, messages, *, round=0, model=None):
        return self.server.serve(messages, run=self.run, round=round, reference=None, model=model or self.model)

    def gateway(self, *, unreachable=()):
        fed = self

        class Gateway:
            def online(self, senders):
                return [c for c in senders if c not in unreachable]

            def sign(self, cid, cset):
                return fed.uploader(cid).sign_set(cset)

            def release(self, holder, request):
                return fed.holders[holder].release(request)

        return Gateway()

    def round(self, messages, *, round=0, model=None, unreachable=()):
        from fedattn.round import run_round

        return run_round(messages, server=self.server, clients=self.gateway(unreachable=unreachable), run=self.run,
                         round=round, reference=None, model=model or self.model)
