"""CKKS ciphertexts as numpy arrays: RNS residues, a second half every party derives itself, SEAL for the rest.

A fresh CKKS ciphertext under secret key ``s`` is ``(c0, c1) = (m + e - a*s, a)``: ``c1 = a`` is
uniform and public, ``c0`` carries the message. secfl never lets a ciphertext's ``a`` come from
the server: a client derives it from a seed (:func:`second_half`), the key holder derives the same
``a`` from the seed in the client's signed upload, and the server only adds ``c0`` halves. So a
key holder decrypts ``(sum c0, sum a)`` with a second half it built itself: no server can make it
decrypt ``(0, c)`` (which would hand back ``c*s``, the secret key).

Polynomials are held as ``(limbs, N)`` arrays of ``uint64``: residue ``i`` modulo the ``i``-th
prime of the data level (RNS), in the NTT (evaluation) form SEAL uses for CKKS, except where a
function says "coefficient form". The primes are below 2^61, so a sum of two residues fits in
``uint64`` and modular addition is exact in numpy.

What SEAL still does (its buffers read and written in place, :mod:`secagg.sealmem`, or through
files where that is not vouched for): the NTT and products with the secret key (a decryption of
``(x, y)`` is ``x + y*s``, a product with ``s`` as a plaintext is ``y*s``). Encrypting messages
``m_k`` with given ``a_k``:

1. each ``e_k`` is sampled here (centred binomial, ``eta = 21``: standard deviation 3.24, the HE
   standard's 3.2 within 2 %) and each ``m_k`` is encoded here (:mod:`secagg.encoding`, SEAL's
   encoding in numpy), both in coefficient form; each ``a_k`` is expanded from its seed straight
   into NTT form;
2. SEAL transforms the ``m_k + e_k``, 15 at a time as the polynomials of one ciphertext (SEAL
   transforms every polynomial of a ciphertext in one call), and multiplies the ``a_k``, held the
   same way, by ``s``;
3. the difference, ``m_k + e_k - a_k*s``, is each ``c0`` (:meth:`Ring.encrypt_many`,
   :meth:`Ring.ntt_plus_products`).

``a`` is sampled in NTT form, as SEAL samples its own seeded second halves: the NTT is a bijection
of each prime's residues, so a uniform ``a`` is as uniform in either form, and a key holder that
rebuilds ``sum a_i`` can decrypt ``(sum c0, sum a_i)`` without transforming anything. Where the
randomness comes from: :mod:`secagg.sampling`; sums and the wire format: :mod:`secagg.residues`. A key
holder decrypts a batch at a time (:meth:`Ring.decrypt_many`: ``c0 + a*s`` and the inverse NTT in
SEAL, the decoding in numpy, :func:`secagg.encoding.decode_coeff`).

Example:
    >>> import numpy as np, secagg
    >>> keys = secagg.generate_keys(preset="compact")
    >>> ring = Ring(keys.secret.preset)
    >>> a = ring.uniform(second_half(b"\\x01" * 32, chunk=0, preset=keys.secret.preset))
    >>> c0 = ring.encrypt(np.full(8192, 0.25), keys.secret, a)
    >>> values = ring.decrypt(c0, a, keys.secret)
    >>> bool(np.allclose(values, 0.25, atol=1e-6))
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np
import tenseal.sealapi as sealapi

from . import sealio, sealmem
from .encoding import decode_coeff, decodes, encode_coeff
from .keys import SecretContext, seal_context
from .presets import CBD_ETA, ERROR_STD, Preset, wire_bits
from .residues import Residues
from .sampling import Sampling, second_half
from .templates import MAX_POLYS, batch_template, seal_tools, templates

__all__ = ["Ring", "ring_of", "second_half", "BATCH", "CBD_ETA", "ERROR_STD"]


_NTT_FLAG_OFFSET = 16 + 32  # SEAL header, then the parms_id (4 x u64), then is_ntt_form (u8)
#: Polynomials :meth:`Ring.ntt_plus_products` hands SEAL per call, after a constant.
BATCH = MAX_POLYS - 1


def _coefficient_form(prefix: bytes) -> bytes:
    """A ciphertext template's header with its NTT flag cleared."""
    return prefix[:_NTT_FLAG_OFFSET] + b"\x00" + prefix[_NTT_FLAG_OFFSET + 1:]


def _nonzero(operation: Callable[..., None], *args: Any) -> bool:
    """Run a SEAL operation in place; ``False`` where its result is all zeros, which SEAL computes
    and then refuses to return (a "transparent" ciphertext): the zeros stay in the object."""
    try:
        operation(*args)
    except RuntimeError as exc:
        if "transparent" not in str(exc):
            raise
        return False
    return True


class Ring(Residues, Sampling):
    """The data level of a preset: its primes, and SEAL objects built from and read into arrays."""

    def __init__(self, preset: Preset) -> None:
        self.preset = preset
        self.seal = seal_context(preset)
        data = self.seal.first_context_data()
        self.parms_id = data.parms_id()
        self.primes = [int(m.value()) for m in data.parms().coeff_modulus()]
        self.q = np.array(self.primes, dtype=np.uint64)[:, None]
        self.n = preset.poly_modulus_degree
        self.limbs = len(self.primes)
        self.bits = [p.bit_length() for p in self.primes]
        self.widths = [wire_bits(b) for b in self.bits]
        self.encoder, self.evaluator = seal_tools(preset)  # shared: building them costs ~0.15 ms per Ring
        self.scale = 2.0**preset.scale_bits
        ct_prefix, pt_prefix, pt_unit_prefix = templates(preset)
        self._ct_prefix = ct_prefix
        self._pt_prefix = pt_prefix
        self._pt_unit_prefix = pt_unit_prefix  # scale 1: a factor in a product, not an encoded value
        self._zero = self.zeros()
        self._one = self.zeros()
        self._one[:, 0] = 1  # the constant 1 (coefficient form)
        self._ones = np.ones_like(self._one)  # the constant 1 (NTT form)

    # ---- SEAL objects --------------------------------------------------------------------------
    # Residues reach SEAL's buffers in place where :mod:`secagg.sealmem` vouches for its layout, and
    # otherwise through a file as SEAL's own serialised objects (a template's header, then the arrays).
    def _blob(self, prefix: bytes, *polys: np.ndarray) -> bytearray:
        """A template's header followed by ``polys`` as little-endian uint64, in one buffer."""
        size = self.limbs * self.n
        blob = bytearray(len(prefix) + 8 * size * len(polys))
        blob[:len(prefix)] = prefix
        body = np.frombuffer(blob, dtype="<u8", offset=len(prefix))
        for i, poly in enumerate(polys):
            body[i * size:(i + 1) * size] = poly.reshape(-1)
        return blob

    def _ciphertext_of(self, *polys: np.ndarray, ntt: bool, unit: bool = False,
                       secret: bool = False) -> sealapi.Ciphertext:
        """A data-level ciphertext holding ``polys`` (2 to :data:`MAX_POLYS`; residues already checked),
        at scale 1 with ``unit`` (a batch), else at the preset's scale (then exactly 2); ``secret``:
        nothing of them is left in a scratch file or buffer (in place, none is made)."""
        if sealmem.available():
            return sealmem.new_ciphertext(self.seal, self.parms_id, polys, ntt=ntt, scale=1.0 if unit else self.scale)
        prefix = batch_template(self.preset, len(polys)) if unit else self._ct_prefix
        blob = self._blob(prefix if ntt else _coefficient_form(prefix), *polys)
        try:
            return sealio.load_own(sealapi.Ciphertext, self.seal, blob, what="polynomials", secret=secret)
        finally:
            if secret:
                blob[:] = bytes(len(blob))

    def _plaintext_of(self, poly: np.ndarray, *, unit: bool, secret: bool = False) -> sealapi.Plaintext:
        """A data-level plaintext (NTT form) holding ``poly`` (residues already checked), at scale 1
        with ``unit``, else at the preset's scale; ``secret`` as for :meth:`_ciphertext_of`."""
        if sealmem.available():
            if poly.shape != (self.limbs, self.n):
                raise ValueError(f"a polynomial is a ({self.limbs}, {self.n}) array, got {poly.shape}")
            return sealmem.new_plaintext(self.parms_id, poly, scale=1.0 if unit else self.scale)
        blob = self._blob(self._pt_unit_prefix if unit else self._pt_prefix, poly)
        try:
            return sealio.load_own(sealapi.Plaintext, self.seal, blob, what="a plaintext", secret=secret)
        finally:
            if secret:
                blob[:] = bytes(len(blob))

    def _polys_of(self, ct: sealapi.Ciphertext, start: int = 0, stop: int | None = None, *,
                  secret: bool = False) -> np.ndarray:
        """A copy of ``ct``'s polynomials ``start:stop``, a ``(count, limbs, N)`` array; ``secret``:
        nothing of them is left in the scratch file (the caller wipes ``ct`` itself)."""
        if sealmem.available():
            return sealmem.read(ct, start, stop)
        polys = ct.size() * self.limbs * self.n
        raw = sealio.dump_own(ct, max_inflated=len(self._ct_prefix) + 8 * polys, secret=secret)
        every = np.frombuffer(raw, dtype="<u8", count=polys, offset=len(raw) - 8 * polys)
        return every.reshape(ct.size(), self.limbs, self.n)[start:stop].copy()

    def _wipe(self, obj: sealapi.Ciphertext | sealapi.Plaintext) -> None:
        """Zero an object's residues before SEAL frees them (its memory pool does not clear)."""
        if sealmem.available():
            sealmem.wipe(obj)
        elif isinstance(obj, sealapi.Plaintext):
            obj.set_zero()
        else:
            _nonzero(self.evaluator.sub_inplace, obj, obj)  # SEAL computes the zeros, then refuses to return them

    def ciphertext(self, c0: np.ndarray, c1: np.ndarray, *, ntt: bool = True) -> sealapi.Ciphertext:
        return self._ciphertext_of(self.check(c0, what="c0"), self.check(c1, what="c1"), ntt=ntt)

    def plaintext(self, a: np.ndarray, *, secret: bool = False) -> sealapi.Plaintext:
        """``a`` (NTT form) as a SEAL plaintext; ``secret``: leave nothing of it in the scratch file."""
        return self._plaintext_of(self.check(a, what="a plaintext"), unit=False, secret=secret)

    def plaintext_array(self, plain: sealapi.Plaintext, *, secret: bool = False) -> np.ndarray:
        """A copy of ``plain``'s residues (NTT form); ``secret``: then zeroed in ``plain`` and the scratch file."""
        if sealmem.available():
            out = sealmem.read(plain).reshape(self.limbs, self.n)
        else:
            size = 8 * self.limbs * self.n
            raw = sealio.dump_own(plain, max_inflated=len(self._pt_prefix) + size, secret=secret)
            out = np.frombuffer(raw, dtype="<u8", count=size // 8, offset=len(raw) - size).reshape(
                self.limbs, self.n).copy()
        if secret:
            plain.set_zero()  # SEAL's pool keeps what it frees
        return out

    def encode(self, values: np.ndarray) -> sealapi.Plaintext:
        """``N`` real values, two per complex slot, at the preset's scale (NTT form)."""
        plain = sealapi.Plaintext()
        self.encoder.encode((values[0::2] + 1j * values[1::2]).tolist(), self.parms_id, self.scale, plain)
        return plain

    def decode(self, plain: sealapi.Plaintext, *, secret: bool = False) -> np.ndarray:
        """SEAL's decoding of ``plain`` (at any level); ``secret``: ``plain`` (a raw decryption or sum)
        is zeroed after. SEAL's decoder keeps its scratch in SEAL's pool, out of reach: where the
        primes allow, :func:`secagg.encoding.decode_coeff` is used instead (:meth:`decode_many`)."""
        try:
            z = np.asarray(self.encoder.decode_complex(plain))
        finally:
            if secret:
                plain.set_zero()  # SEAL's pool keeps what it frees
        out = np.empty(2 * z.size, dtype=np.float64)
        out[0::2], out[1::2] = z.real, z.imag
        return out

    # ---- the two operations that need a secret -------------------------------------------------
    def encode_coeff(self, values: np.ndarray) -> np.ndarray:
        """``N`` real values (or ``(count, N)``), two per complex slot, at the preset's scale, as
        residues in coefficient form (:mod:`secagg.encoding`)."""
        return encode_coeff(values, scale=self.scale, primes=self.primes)

    def encrypt(self, values: np.ndarray, secret: SecretContext, a: np.ndarray) -> np.ndarray:
        """``c0 = m + e - a*s`` for ``N`` values and a second half ``a`` (NTT form)."""
        out: np.ndarray = self.encrypt_many(self.encode_coeff(values)[None], self.key_factor(secret), a[None])[0]
        return out

    def key_factor(self, secret: SecretContext) -> sealapi.Plaintext:
        """``s`` as :meth:`factor`, the factor :meth:`encrypt_many` multiplies second halves by: built
        once per secret context (it costs a decryption and two blobs, as much as encrypting a small
        update) and kept beside the key in it (``secret.data_key``)."""
        if secret.data_key is None:
            s = self.secret_ntt(secret)
            try:
                secret.data_key = self.factor(s)
            finally:
                s.fill(0)
        return secret.data_key

    def encrypt_many(self, messages: np.ndarray, key: sealapi.Plaintext, a: np.ndarray) -> np.ndarray:
        """``c0_k = m_k + e_k - a_k*s`` for ``count`` encoded messages (a ``(count, limbs, N)`` array
        from :meth:`encode_coeff`, coefficient form), second halves ``a`` (same shape, NTT form) and
        ``key`` from :meth:`key_factor`, with fresh errors ``e_k``: a ``(count, limbs, N)`` array."""
        if a.shape != messages.shape:
            raise ValueError("messages and a must have the same shape")
        x = self.add(messages, self.errors(messages.shape[0]))
        try:
            return self.ntt_plus_products(x, a, key, negate=True)
        finally:
            x.fill(0)  # m + e: with the public c0 and a, it gives a*s

    def decrypt(self, c0: np.ndarray, a: np.ndarray, secret: SecretContext) -> np.ndarray:
        """The **raw** values of ``(c0, a)``: for a key holder's own use, never to release as they are
        (:meth:`decrypt_many` of one ciphertext)."""
        if self._numpy_decodes:
            out: np.ndarray = self.decrypt_many(c0[None], a[None], self.key_factor(secret))[0]
            return out
        return self.decode(self.decrypt_plain(c0, a, secret), secret=True)  # checked there

    def decrypt_plain(self, c0: np.ndarray, a: np.ndarray, secret: SecretContext) -> sealapi.Plaintext:
        ct = self.ciphertext(c0, a, ntt=True)  # both halves in NTT form already: nothing to transform
        out = sealapi.Plaintext()
        secret.decryptor.decrypt(ct, out)  # c0 + a * s
        return out

    # ---- residue arithmetic SEAL does for us (products need 128 bits) ---------------------------
    def ntt(self, coeff: np.ndarray) -> np.ndarray:
        """The NTT (evaluation) form of a polynomial in coefficient form."""
        ct = self.ciphertext(coeff, self._one, ntt=False)  # SEAL refuses a zero second half ("transparent")
        self.evaluator.transform_to_ntt_inplace(ct)
        out: np.ndarray = self._polys_of(ct, 0, 1)[0]
        return out

    def mul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``x * y`` of two polynomials in NTT form (pointwise modulo each prime)."""
        if not y.any():
            return self.zeros()
        ct = self.ciphertext(x, np.ones_like(x), ntt=True)  # second half y after the product: never zero
        self.evaluator.multiply_plain_inplace(ct, self._plaintext_of(self.check(y, what="y"), unit=True))
        out: np.ndarray = self._polys_of(ct, 0, 1)[0]
        return out

    def secret_ntt(self, secret: SecretContext) -> np.ndarray:
        """A secret key's residues at the data level, NTT form (the decryption of ``(0, 1)``)."""
        return self.plaintext_array(self.decrypt_plain(self.zeros(), self._ones, secret), secret=True)

    def factor(self, key: np.ndarray) -> sealapi.Plaintext:
        """``key`` (data-level residues, NTT form: a secret key or a share of one) as a SEAL plaintext
        at scale 1, a factor of :meth:`ntt_plus_products`; no copy of it is left in a scratch file or
        buffer (call ``set_zero()`` on it once it is no longer needed)."""
        return self._plaintext_of(key, unit=True, secret=True)

    @contextmanager
    def factor_from(self, key: np.ndarray) -> Iterator[sealapi.Plaintext]:
        """:meth:`factor` of ``key`` (a key share times its Lagrange weight, say) for the ``with``
        block: ``key`` is zeroed once the factor holds it, the factor on leaving, errors included."""
        factor = self.factor(key)
        key.fill(0)
        try:
            yield factor
        finally:
            factor.set_zero()

    def ntt_plus_products(self, x_coeff: np.ndarray, y: np.ndarray, factor: sealapi.Plaintext, *,
                          negate: bool = False, secret: bool = False) -> np.ndarray:
        """``NTT(x_k) + y_k * f`` (``- y_k * f`` with ``negate``) for ``(count, limbs, N)`` arrays
        ``x_coeff`` (coefficient form) and ``y`` (NTT form) and ``factor = factor(f)``: a
        ``(count, limbs, N)`` array; ``secret``: the results are secret (wiped from SEAL's objects
        and the scratch file once copied out).

        SEAL transforms and multiplies every polynomial of a ciphertext in one call, so up to
        :data:`BATCH` ``x_k`` go to it as the polynomials of one ciphertext, ``(1, x_0, ...)``, and
        the ``y_k`` as another, ``(0, y_0, ...)``: the constant's place holds no product with ``f``
        (which would be the key itself), and the one polynomial a ciphertext needs beside its
        "second half" is there even for a single ``x``. Where every result is zero (a zero ``x``,
        zero products) SEAL computes it and then refuses to return it (a "transparent" ciphertext):
        the zeros are taken as they are. The copy of the ``x_k`` handed to SEAL (for a client
        ``m + e``, which with the public ``c0`` and ``a`` gives ``a*s``) becomes the ``c0`` in place
        (through a file: passes it as a secret, wiped), and the products are zeroed before SEAL
        frees them, since its memory pool does not clear what it frees; the caller wipes its own
        ``x_coeff``."""
        if y.shape != x_coeff.shape or x_coeff.shape[1:] != (self.limbs, self.n):
            raise ValueError(f"x_coeff and y must both be (count, {self.limbs}, {self.n}) arrays")
        return self._batches(x_coeff, y, factor, negate=negate, secret=secret, x_ntt=False, out_ntt=True)

    def _batches(self, x: np.ndarray, y: np.ndarray | None, factor: sealapi.Plaintext | None, *, negate: bool,
                 secret: bool, x_ntt: bool, out_ntt: bool) -> np.ndarray:
        """``x_k +- y_k * f`` with ``x`` in NTT form (``x_ntt``) or coefficient form (transformed first),
        the results in NTT form (``out_ntt``) or coefficient form (transformed back); no products where
        ``y`` is None. The batching and wiping of :meth:`ntt_plus_products`."""
        count = x.shape[0]
        out = np.empty_like(x)
        one = self._ones if x_ntt else self._one  # the constant 1 in the form x is in
        for b0 in range(0, count, BATCH):
            k = min(BATCH, count - b0)
            ct = self._ciphertext_of(one, *x[b0:b0 + k], ntt=x_ntt, unit=True, secret=True)
            products, done = None, False
            try:  # each step may end in zeros, which SEAL computes and refuses to return (_nonzero)
                if not x_ntt:
                    _nonzero(self.evaluator.transform_to_ntt_inplace, ct)
                if y is not None and factor is not None:
                    products = self._ciphertext_of(self._zero, *y[b0:b0 + k], ntt=True, unit=True)
                    if _nonzero(self.evaluator.multiply_plain_inplace, products, factor):
                        _nonzero(self.evaluator.sub_inplace if negate else self.evaluator.add_inplace, ct, products)
                    # else every product is zero (a zero factor or zero halves): nothing to add
                if not out_ntt:
                    _nonzero(self.evaluator.transform_from_ntt_inplace, ct)
                out[b0:b0 + k] = self._polys_of(ct, 1, k + 1, secret=secret)
                done = True
            finally:  # also on an error: ct may hold m + e, products a * s
                if products is not None:
                    self._wipe(products)
                if secret or not done:
                    self._wipe(ct)
        return out

    @property
    def _numpy_decodes(self) -> bool:
        return decodes(self.primes)

    def decrypt_many(self, c0: np.ndarray, a: np.ndarray, key: sealapi.Plaintext) -> np.ndarray:
        """The **raw** values of ciphertexts ``(c0_k, a_k)`` (``(count, limbs, N)`` arrays, NTT form)
        under ``key`` (:meth:`factor` of the secret key's residues): a ``(count, N)`` array, for a key
        holder's own use, never to release as it is. ``c0_k + a_k * s`` is formed and transformed
        back 15 at a time (one SEAL call each) and decoded in numpy where the primes allow
        (:func:`secagg.encoding.decode_coeff`; else by SEAL); nothing of it is left in SEAL's objects."""
        if a.shape != c0.shape or c0.shape[1:] != (self.limbs, self.n):
            raise ValueError(f"c0 and a must both be (count, {self.limbs}, {self.n}) arrays")
        self.check(c0, what="c0")
        self.check(a, what="a")
        return self._decoded(self._batches(c0, a, key, negate=False, secret=True, x_ntt=True,
                                           out_ntt=not self._numpy_decodes))

    def decode_many(self, x: np.ndarray) -> np.ndarray:
        """:meth:`decode_ntt` of every polynomial of a ``(count, limbs, N)`` array (NTT form): a
        ``(count, N)`` array, transformed back 15 at a time and decoded in numpy where the primes allow."""
        if x.shape[1:] != (self.limbs, self.n):
            raise ValueError(f"x must be a (count, {self.limbs}, {self.n}) array")
        self.check(x, what="a plaintext")
        if self._numpy_decodes:  # coefficient form for numpy's decoder; else SEAL's takes NTT form
            return self._decoded(self._batches(x, None, None, negate=False, secret=True, x_ntt=True, out_ntt=False))
        return self._decoded(x.copy())

    def _decoded(self, raw: np.ndarray) -> np.ndarray:
        """Decoded values of raw sums from :meth:`_batches` (coefficient form where numpy decodes,
        else NTT form for SEAL's decoder), which are zeroed after."""
        try:
            if self._numpy_decodes:
                return decode_coeff(raw, scale=self.scale, primes=self.primes)
            return np.stack([self.decode_ntt(p) for p in raw])
        finally:
            raw.fill(0)

    def decode_ntt(self, x: np.ndarray) -> np.ndarray:
        """The values a plaintext polynomial (NTT form, at the preset's scale) encodes (a raw sum:
        nothing of it is left in a scratch file or SEAL's objects)."""
        if self._numpy_decodes:
            out: np.ndarray = self.decode_many(x[None])[0]
            return out
        return self.decode(self.plaintext(x, secret=True), secret=True)

    def full_ciphertext(self, c0: np.ndarray, a: np.ndarray) -> sealapi.Ciphertext:
        """``(c0, a)`` as a SEAL ciphertext at the data level, for server-side circuits."""
        return self.ciphertext(c0, a, ntt=True)  # checked there


@lru_cache(maxsize=16)
def ring_of(preset: Preset) -> Ring:
    """``preset``'s ring, built once per process and shared: a :class:`Ring` holds no secret and
    nothing that changes after it is built (building one costs ~0.15 ms, paid per upload before)."""
    return Ring(preset)
