"""Helpers shared by the test suites (fixtures live in conftest.py)."""

import numpy as np

import secagg


def random_update(rng: np.random.Generator, magnitude: float = 0.05, shapes=None) -> dict[str, np.ndarray]:
    shapes = shapes or {"conv.weight": (8, 3, 3, 3), "conv.bias": (8,), "fc.weight": (10, 1200), "fc.bias": (10,)}
    return {n: rng.uniform(-magnitude, magnitude, s).astype(np.float32) for n, s in shapes.items()}


def released_tolerance(preset: secagg.Preset, n_clients: int, weight: float = 1.0) -> float:
    """8 sigma of the flooding noise (plus float32 rounding of the result)."""
    return 8 * 2.0**preset.flood_bits * preset.noise_std() * np.sqrt(n_clients) * weight + 1e-6


class SmallFederation:
    """A few clients, a server and key holders wired with the real roles, for protocol tests.

    Each client has one ledger, shared by its uploader and its key holder, as a real party does.
    ``message(..., fresh=True)`` encrypts with a throwaway ledger instead: what a misbehaving
    client (two uploads for one round) or an attacker replaying one would send.
    """

    def __init__(self, keys, client_ids, *, rule=None, protocol="client-scored", signed=True,
                 min_contributors=secagg.DEFAULT_MIN_CONTRIBUTORS, max_payload_bytes=None, run="test-run",
                 identities=None):
        from fedattn.protocols import make_protocol
        from fedattn.round import ServerRole
        from fedattn.rules import FedAvg

        self.keys, self.run = keys, run
        self.protocol = make_protocol(protocol, rule or FedAvg(equal_weights=True))
        self.identities, self.roster = identities or (secagg.generate_identities(client_ids) if signed else ({}, None))
        self.ledgers = {c: secagg.MemoryLedger() for c in client_ids}
        self.server = ServerRole(self.protocol, aggregator=secagg.Aggregator(
            keys.public, roster=self.roster, max_payload_bytes=max_payload_bytes))
        self.holders = {c: secagg.KeyHolder(keys.secret, roster=self.roster, min_contributors=min_contributors,
                                            ledger=self.ledgers[c], release_seed=0) for c in client_ids}

    def uploader(self, cid, *, fresh=False, identity=None):
        ledger = secagg.MemoryLedger() if fresh else self.ledgers.setdefault(cid, secagg.MemoryLedger())
        return secagg.Uploader(self.keys.secret, identity=identity or self.identities.get(cid), ledger=ledger,
                               client_id=None if (identity or self.identities.get(cid)) else cid)

    def message(self, cid, update, *, round=0, commitment="c0", num_samples=10, reference=None, fresh=False):
        from fedattn.round import ClientRole

        role = ClientRole(self.protocol, client_id=cid, uploader=self.uploader(cid, fresh=fresh))
        return role.message(update, num_samples=num_samples, reference=reference, run=self.run, round=round,
                            commitment=commitment)

    def serve(self, messages, *, round=0, model=None):
        return self.server.serve(messages, round=round, reference=None, model=model)

    def release(self, served, *, holder="client-0", round=None):
        return self.holders[holder].release(served.aggregate_wire, run=self.run,
                                            round=served.round if round is None else round, receipts=served.receipts)

    def round(self, messages, *, round=0, holder="client-0", model=None):
        from fedattn.round import run_round

        return run_round(messages, server=self.server, round=round, reference=None, model=model,
                         release=lambda served: (self.release(served, holder=holder).values, holder))
