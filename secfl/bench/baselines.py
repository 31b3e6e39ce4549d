"""The methods ``secfl bench`` compares, each split into the steps of one aggregation.

Every method runs the same three roles on the same update: the **client** (encrypt or mask, then
serialise), the **server** (deserialise every client's payload and aggregate) and, where the
method has one, the **key holder** (decrypt, then release). A :class:`Timer` passed to each role
records the time of each step (``encrypt``, ``serialise``, ``deserialise``, ``aggregate``,
``decrypt``, ``release``), so that the pytest-benchmark suites and the command line measure the
very same code.

Methods:

* ``plaintext``: numpy arrays saved with ``np.save`` (as Flower ships them), summed in float64.
* ``secagg-compact`` / ``secagg-strict``: this project (:mod:`secagg`), its public API only.
* ``flare-tenseal``: NVIDIA FLARE's HE filters: a TenSEAL context with N=8192, coefficient
  modulus [60, 40, 40], scale 2^40 and Galois keys; one ``CKKSVector`` per layer, serialised
  without the context; the server deserialises and adds client by client (memory stays bounded).
* ``flower-secagg+``: the masking of Flower's legacy SecAgg+ (``secaggplus_mod`` and
  ``SecAggPlusWorkflow``), with Flower's own functions and defaults (clipping range 8, quantisation
  range 2^22, modulus 2^32, ``num_shares=3`` and ``reconstruction_threshold=2`` as in Flower's
  secure-aggregation example). Included: client side, the ECDH key agreement with each neighbour,
  weighting, stochastic quantisation, the self mask and pairwise masks expanded by Flower's PRG,
  the modulus and ``np.save`` serialisation; server side, loading, summing, the Shamir
  reconstruction of every survivor's self-mask seed, regenerating and removing the self masks,
  and dequantising. Omitted (untimed set-up): key generation, the share-keys round (Shamir
  splitting, Fernet encryption of shares), network round trips, and dropout recovery (no client
  drops out, so no pairwise mask is regenerated).
"""

from __future__ import annotations

import io
import math
import os
from collections import defaultdict
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

import secagg
from secagg.unsafe import decrypt_raw

from .method import PHASES, ROLE_PHASES, Method, Payload, Timer, Update, read_request, stream_request
from .threshold import SecAggThreshold

__all__ = ["Timer", "Method", "METHODS", "PHASES", "ROLE_PHASES", "make_method", "method_unavailable"]

class Plaintext(Method):
    name = "plaintext"
    label = "plaintext numpy (np.save per array, float64 sum)"
    reuse_payloads = False
    has_key_holder = False

    def client(self, update: Update, k: int, timer: Timer) -> Payload:
        with timer("serialise"):
            out = []
            for a in update.values():
                buf = io.BytesIO()
                np.save(buf, a, allow_pickle=False)
                out.append(buf.getvalue())
        return out

    def server(self, payloads: list[Payload], timer: Timer) -> Update:
        total: list[np.ndarray] | None = None
        for payload in payloads:
            with timer("deserialise"):
                arrays = [np.load(io.BytesIO(b), allow_pickle=False) for b in payload]
            with timer("aggregate"):
                if total is None:
                    total = [a.astype(np.float64) for a in arrays]
                else:
                    for t, a in zip(total, arrays):
                        t += a
        return dict(zip(self.shapes, total or []))


class SecAgg(Method):
    """This project's secagg with one of its presets."""

    label = "secagg"

    def __init__(self, preset: str, *, sized: bool = False) -> None:
        self.base = self.preset = secagg.get_preset(preset)
        #: sized: the preset sized for each cell's number of clients (``<preset>-for-<clients>``)
        self.sized = sized
        self.name = f"secagg-{preset}" + ("-sized" if sized else "")  # type: ignore[misc]
        self.label = (f"secagg, preset {preset!r}" + (" sized for the cell's clients" if sized else ""))  # type: ignore[misc]
        self.keys: secagg.KeySet | None = None
        #: the server's fold threads (None: secagg's choice; :func:`secagg.worker_limit` caps it)
        self.server_workers: int | None = None

    def setup(self, *, shapes: dict[str, tuple[int, ...]], clients: int) -> None:
        super().setup(shapes=shapes, clients=clients)
        if self.sized:
            self.preset = secagg.sized_preset(self.base, members=clients)
            self.label = f"secagg, preset {self.preset.name!r}: {self.preset.description}"  # type: ignore[misc]
        self.keys = secagg.generate_keys(preset=self.preset)
        self.clients = clients
        self.ids, self.roster = secagg.generate_identities([f"client-{k}" for k in range(clients)], group_size=clients)
        self.layout = secagg.Layout.of({n: np.zeros(s, np.float32) for n, s in shapes.items()})
        self.run, self.commitment = "bench", secagg.round_commitment(0, {}, {"run": "bench"})
        self.receipts: dict[str, str] = {}

    def notes(self, params: int) -> str:
        workers = secagg.choose_workers(-(-params // self.preset.values_per_ciphertext), None)
        if workers > 1:
            return (f"clients encrypt on {workers} worker processes (secagg's default from "
                    f"{secagg.PARALLEL_MIN_CHUNKS} ciphertexts); their memory is not in peak_rss.client")
        return ""

    def _uploader(self, k: int) -> secagg.Uploader:
        assert self.keys is not None
        # a fresh ledger per call: the bench repeats a round, which a real client refuses to do
        return secagg.Uploader(self.keys.secret, identity=self.ids[f"client-{k}"], ledger=secagg.MemoryLedger(),
                               roster=self.roster)

    def client(self, update: Update, k: int, timer: Timer) -> Payload:
        uploader = self._uploader(k)
        with timer("encrypt"):  # encoding, encryption and the signed, packed upload
            wire = uploader.upload(update, run=self.run, round=0, commitment=self.commitment)
        with timer("serialise"):
            return [wire]

    def server(self, payloads: list[Payload], timer: Timer) -> BinaryIO:
        assert self.keys is not None
        aggregator = secagg.Aggregator(self.keys.public, roster=self.roster, workers=self.server_workers)
        state = aggregator.open_round(run=self.run, round=0, layout=self.layout)
        for p in payloads:
            with timer("deserialise"):  # signature, digest and residue checks of one upload
                state.receive(p[0])
        cset = state.contributor_set(key_holder="client-0")
        # each member signs the set (client work, one Ed25519 signature each: not the server's time)
        keys = {m: self.ids[m] for m in cset.members}
        signatures = {m: cset.sign(keys[m]) for m in cset.members}
        with timer("aggregate"):  # the first halves added, the request streamed out (written to a file)
            return stream_request(state, cset, signatures)

    def _holder(self) -> secagg.KeyHolder:
        assert self.keys is not None
        ledger = secagg.MemoryLedger()
        ledger.claim_round(self.run, 0, self.commitment)
        return secagg.KeyHolder(self.keys.secret, identity=self.ids["client-0"], roster=self.roster, ledger=ledger)

    def key_holder(self, aggregate: BinaryIO, timer: Timer) -> tuple[Update, Update]:
        holder = self._holder()
        with timer("decrypt"):  # the request read, receipts and signatures verified, second halves rebuilt, decrypted
            raw = decrypt_raw(holder, read_request(aggregate))
        with timer("release"):  # flooding and rounding, as KeyHolder.release does after decrypt_raw
            preset = self.preset
            sigma = preset.noise_std() * math.sqrt(self.clients)
            released = secagg.release(raw, noise_std=sigma, flood_bits=preset.flood_bits)
            out = self.layout.unpack(released)
        return out, self.layout.unpack(raw)


class FlareTenSEAL(Method):
    """NVIDIA FLARE's HE as its provisioning ships it (``nvflare.lighter.impl.he.HEBuilder``): a
    TenSEAL CKKS context with N=8192, coefficient modulus [60, 40, 40], scale 2^40, **symmetric**
    (secret-key) encryption and relinearisation keys; clients hold the secret key, the server a
    context with the relinearisation keys only. One ``CKKSVector`` per layer, serialised without
    the context; the server deserialises and adds client by client; the key holder decrypts."""

    name = "flare-tenseal"
    label = "NVIDIA FLARE as provisioned (N=8192, [60,40,40], 2^40, symmetric, relin keys, one CKKSVector per layer)"
    requires = "tenseal"
    reuse_payloads = True

    def setup(self, *, shapes: dict[str, tuple[int, ...]], clients: int) -> None:
        import tenseal as ts

        super().setup(shapes=shapes, clients=clients)
        self.ts = ts
        self.ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40],
                              encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC, n_threads=1)
        self.ctx.generate_relin_keys()
        self.ctx.global_scale = 2**40
        self.server_ctx = ts.context_from(self.ctx.serialize(save_public_key=False, save_secret_key=False,
                                                             save_galois_keys=False, save_relin_keys=True),
                                          n_threads=1)

    def client(self, update: Update, k: int, timer: Timer) -> Payload:
        with timer("encrypt"):
            vectors = [self.ts.ckks_vector(self.ctx, a.ravel().tolist()) for a in update.values()]
        with timer("serialise"):  # without the context, as FLARE sends them
            return [v.serialize() for v in vectors]

    def server(self, payloads: list[Payload], timer: Timer) -> Payload:
        total: list[Any] | None = None
        for payload in payloads:  # FLARE adds client by client
            with timer("deserialise"):
                vectors = [self.ts.ckks_vector_from(self.server_ctx, b) for b in payload]
            with timer("aggregate"):
                total = vectors if total is None else [t + v for t, v in zip(total, vectors)]
        with timer("aggregate"):
            return [v.serialize() for v in total or []]

    def key_holder(self, aggregate: Payload, timer: Timer) -> tuple[Update, Update | None]:
        with timer("decrypt"):
            out = {n: np.array(self.ts.ckks_vector_from(self.ctx, b).decrypt()).reshape(s)
                   for (n, s), b in zip(self.shapes.items(), aggregate)}
        return out, out  # FLARE releases raw decryptions


class FlowerSecAggPlus(Method):
    name = "flower-secagg+"
    label = "Flower SecAgg+ masking (legacy API: quantise, self + pairwise masks, int64 on the wire)"
    requires = "flwr"
    install_hint = "install secfl[flower]"
    has_key_holder = False

    #: SecAggPlusWorkflow's defaults and Flower's secure-aggregation example
    CLIPPING_RANGE = 8.0
    QUANTIZATION_RANGE = 2**22
    MODULUS_RANGE = 2**32
    NUM_SHARES = 3
    THRESHOLD = 2

    def __init__(self, *, keep_quantized: bool = False) -> None:
        self.keep_quantized = keep_quantized  # tests compare the unmasked sum with the quantised sum
        self.quantized: dict[int, list[np.ndarray]] = {}
        self.unmasked: list[np.ndarray] | None = None

    def setup(self, *, shapes: dict[str, tuple[int, ...]], clients: int) -> None:
        from flwr.common.secure_aggregation.crypto.shamir import create_shares
        from flwr.supercore.primitives.asymmetric import generate_key_pairs, private_key_to_bytes, public_key_to_bytes

        super().setup(shapes=shapes, clients=clients)
        self.n = clients
        num_shares = min(self.NUM_SHARES, clients)
        half = num_shares >> 1
        # SecAggPlusWorkflow's ring: each client shares with the clients within half_share of it
        self.neighbours = {k: sorted({(k + o) % clients for o in range(-half, half + 1)} - {k}) for k in range(clients)}
        self.sk1, self.pk1, self.seed, self.seed_shares = {}, {}, {}, defaultdict(list)
        for k in range(clients):
            sk, pk = generate_key_pairs()
            self.sk1[k], self.pk1[k] = private_key_to_bytes(sk), public_key_to_bytes(pk)
            self.seed[k] = os.urandom(32)
            # the shares of k's self-mask seed that k's neighbours (and k) hold and hand back to unmask
            self.seed_shares[k] = create_shares(self.seed[k], min(self.THRESHOLD, num_shares), num_shares)

    def client(self, update: Update, k: int, timer: Timer) -> Payload:
        from flwr.common import ndarray_to_bytes
        from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
        from flwr.common.secure_aggregation.ndarrays_arithmetic import (
            factor_combine,
            parameters_addition,
            parameters_mod,
            parameters_multiply,
            parameters_subtraction,
        )
        from flwr.common.secure_aggregation.quantization import quantize
        from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
        from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

        with timer("encrypt"):
            q_ratio = self.QUANTIZATION_RANGE  # weight num_examples == max_weight: ratio 1
            params = parameters_multiply(list(update.values()), q_ratio / self.QUANTIZATION_RANGE)
            quantized = factor_combine(q_ratio, quantize(params, self.CLIPPING_RANGE, self.QUANTIZATION_RANGE))
            if self.keep_quantized:
                self.quantized[k] = [a.astype(np.int64) for a in quantized]
            dims = [a.shape for a in quantized]
            masked = parameters_addition(quantized, pseudo_rand_gen(self.seed[k], self.MODULUS_RANGE, dims))
            for j in self.neighbours[k]:
                shared = generate_shared_key(bytes_to_private_key(self.sk1[k]), bytes_to_public_key(self.pk1[j]))
                mask = pseudo_rand_gen(shared, self.MODULUS_RANGE, dims)
                masked = parameters_addition(masked, mask) if k > j else parameters_subtraction(masked, mask)
            masked = parameters_mod(masked, self.MODULUS_RANGE)
        with timer("serialise"):
            return [ndarray_to_bytes(a) for a in masked]

    def server(self, payloads: list[Payload], timer: Timer) -> Update:
        from flwr.common import bytes_to_ndarray
        from flwr.common.secure_aggregation.crypto.shamir import combine_shares
        from flwr.common.secure_aggregation.ndarrays_arithmetic import (
            factor_extract,
            get_parameters_shape,
            parameters_addition,
            parameters_mod,
            parameters_subtraction,
        )
        from flwr.common.secure_aggregation.quantization import dequantize
        from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

        total = None
        for payload in payloads:
            with timer("deserialise"):
                arrays = [bytes_to_ndarray(b) for b in payload]
            with timer("aggregate"):
                total = arrays if total is None else parameters_addition(total, arrays)
        with timer("aggregate"):  # unmasking: the server learns the sum
            assert total is not None
            total = parameters_mod(total, self.MODULUS_RANGE)
            for k in range(len(payloads)):
                seed = combine_shares(self.seed_shares[k])
                total = parameters_subtraction(total, pseudo_rand_gen(seed, self.MODULUS_RANGE, get_parameters_shape(total)))
            total = parameters_mod(total, self.MODULUS_RANGE)
            self.unmasked = total if self.keep_quantized else None
            q_total_ratio, total = factor_extract(total)
            values = dequantize(total, self.CLIPPING_RANGE, self.QUANTIZATION_RANGE)
            offset = -(len(payloads) - 1) * self.CLIPPING_RANGE
            mean = [(v + offset) * (self.QUANTIZATION_RANGE / q_total_ratio) for v in values]
            # Flower returns the weighted mean; times the total weight it is the sum the others return
            out = [v * (q_total_ratio / self.QUANTIZATION_RANGE) for v in mean]
        return dict(zip(self.shapes, out))


_FACTORIES: dict[str, Callable[[], Method]] = {
    "plaintext": Plaintext,
    "secagg-compact": lambda: SecAgg("compact"),
    "secagg-strict": lambda: SecAgg("strict"),
    "secagg-threshold": SecAggThreshold,
    "flare-tenseal": FlareTenSEAL,
    "flower-secagg+": FlowerSecAggPlus,
    "secagg-compact-lean": lambda: SecAgg("compact-lean"),
    "secagg-strict-lean": lambda: SecAgg("strict-lean"),
    "secagg-compact-sized": lambda: SecAgg("compact", sized=True),
    "secagg-strict-sized": lambda: SecAgg("strict", sized=True),
}
#: the presets for small federations (sums of at most 22 members, or of the cell's clients):
#: measured at the targets' cell only (see grid)
LEAN = ("secagg-compact-lean", "secagg-strict-lean", "secagg-compact-sized", "secagg-strict-sized")
METHODS = tuple(m for m in _FACTORIES if m not in LEAN)


def method_unavailable(name: str) -> str | None:
    """Why ``name`` cannot run here (a missing optional package), or None."""
    import importlib.util

    cls = type(make_method(name))
    if cls.requires and importlib.util.find_spec(cls.requires) is None:
        return f"skipped: {cls.requires} is not installed ({cls.install_hint or 'pip install ' + cls.requires})"
    return None


def make_method(name: str, **options: Any) -> Method:
    """A fresh, not yet set-up method object (``options`` go to its constructor)."""
    if name not in _FACTORIES:
        raise ValueError(f"methods: unknown method {name!r}; choose one of: {', '.join(_FACTORIES)}")
    return _FACTORIES[name](**options)
