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

What SEAL still does (its residues read and written in place, :mod:`secagg.sealmem`, or where that
is not vouched for through files): the NTT, decoding, and products with the secret key (a decryption of ``(x, y)`` is ``x + y*s``, a
product with ``s`` as a plaintext is ``y*s``). Encrypting messages ``m_k`` with given ``a_k``:

1. each ``e_k`` is sampled here (centred binomial, ``eta = 21``: standard deviation 3.24, the HE
   standard's 3.2 within 2 %) and each ``m_k`` is encoded here (:mod:`secagg.encoding`, SEAL's
   encoding in numpy), both in coefficient form; each ``a_k`` is expanded from its seed straight
   into NTT form;
2. SEAL transforms the ``m_k + e_k``, 14 at a time as the polynomials of one ciphertext (SEAL
   transforms every polynomial of a ciphertext in one call), and multiplies the ``a_k``, held the
   same way, by ``s``;
3. the difference, ``m_k + e_k - a_k*s``, is each ``c0`` (:meth:`Ring.encrypt_many`,
   :meth:`Ring.ntt_plus_products`).

``a`` is sampled in NTT form, as SEAL samples its own seeded second halves: the NTT is a bijection
of each prime's residues, so a uniform ``a`` is as uniform in either form, and a key holder that
rebuilds ``sum a_i`` can decrypt ``(sum c0, sum a_i)`` without transforming anything. Where the
randomness comes from: :mod:`secagg.sampling`.

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

from collections.abc import Callable
from typing import Any

import numpy as np
import tenseal.sealapi as sealapi

from . import sealio, sealmem
from .bitpack import group, pack_bits, read_bits
from .encoding import encode_coeff
from .errors import PayloadError
from .keys import SecretContext, seal_context
from .presets import CBD_ETA, ERROR_STD, Preset, wire_bits
from .sampling import Sampling, second_half
from .templates import MAX_POLYS, batch_template, seal_tools, templates

__all__ = ["Ring", "second_half", "BATCH", "CBD_ETA", "ERROR_STD"]


_NTT_FLAG_OFFSET = 16 + 32  # SEAL header, then the parms_id (4 x u64), then is_ntt_form (u8)
#: Polynomials :meth:`Ring.ntt_plus_products` hands SEAL per call, between two constants.
BATCH = MAX_POLYS - 2


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


class Ring(Sampling):
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

    # ---- residues ------------------------------------------------------------------------------
    @property
    def residue_bytes(self) -> int:
        """Bytes of one polynomial on the wire: ``N`` residues per prime, each in its prime's bits."""
        return sum(self.widths) * self.n // 8

    def zeros(self) -> np.ndarray:
        return np.zeros((self.limbs, self.n), dtype=np.uint64)

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        s: np.ndarray = a + b
        np.minimum(s, s - self.q, out=s)  # below q, s - q wraps past s: no mask, no np.where
        return s

    def neg(self, a: np.ndarray) -> np.ndarray:
        t: np.ndarray = self.q - a
        np.minimum(t, t - self.q, out=t)  # q - 0 = q becomes 0; any other q - a wraps when q is taken
        return t

    def pack(self, a: np.ndarray) -> bytes:
        """One polynomial's residues, limb after limb, packed as :meth:`pack_into` describes."""
        return self.pack_many(a[None])

    def unpack(self, blob: bytes | memoryview, *, what: str) -> np.ndarray:
        """The inverse of :meth:`pack`; every residue is checked to lie below its prime."""
        if len(blob) != self.residue_bytes:
            raise PayloadError(f"{what} holds {len(blob)} bytes; a polynomial of preset {self.preset.name!r} has "
                               f"{self.residue_bytes}")
        out: np.ndarray = self.unpack_many(blob, 1, what=what)[0]
        return out

    def pack_many(self, polys: np.ndarray) -> bytes:
        """:meth:`pack` of every polynomial of a ``(count, limbs, N)`` array, one after the other."""
        return self.pack_into(polys, np.empty(polys.shape[0] * self.residue_bytes, dtype=np.uint8)).tobytes()

    def pack_into(self, polys: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The residues of ``count`` polynomials written into ``out`` (a uint8 array of ``count *
        residue_bytes``), returned. Per polynomial, limb after limb: the ``N`` residues of a prime
        as one little-endian bit string, ``w`` bits each (``w``: :attr:`widths`, the prime's bit
        length, or the next whole byte where a residue's bits could not be read with one 8-byte
        load: :func:`secagg.presets.wire_bits`): every 8 residues fill exactly ``w`` bytes, so no bit is left free to carry a second
        spelling of the same residues."""
        count, size = polys.shape[0], self.residue_bytes
        if out.shape != (count * size,) or out.dtype != np.uint8:
            raise ValueError(f"out must be a uint8 array of {count * size} bytes")
        if count == 0:
            return out
        offset = 0
        for i, w in enumerate(self.widths):
            span = w * self.n // 8
            g = group(w)
            while g * w < 64:  # stores of 8 bytes need groups of at least 8 bytes (56 bits: 2 residues)
                g *= 2
            pack_bits(polys[:, i].astype("<u8", copy=False).reshape(count, self.n // g, g), w, out, offset, size)
            offset += span
        return out

    def unpack_many(self, blob: bytes | memoryview, count: int, *, what: str, out: np.ndarray | None = None,
                    start: int | None = None) -> np.ndarray:
        """The inverse of :meth:`pack_many` for ``count`` polynomials, each residue checked below its
        prime; into ``out`` (a ``(count, limbs, N)`` uint64 array) when given. With ``start``, the
        polynomials are ``blob[start:start + count * residue_bytes]`` of a larger buffer.

        Residue ``j`` of each group (:func:`secagg.bitpack.group`) is read as the 8 bytes starting at its first
        byte (a strided view of the bytes), shifted and masked to its width: a pass over the data
        per prime and place in the group, no byte shuffling. The final residues' 8 bytes would run past the end of
        the buffer: where they do, the last polynomial goes through a padded copy of its own bytes,
        the others are read in place."""
        size = self.residue_bytes
        begin = 0 if start is None else start
        stop = len(blob) if start is None else begin + count * size
        if stop - begin != count * size or stop > len(blob) or begin < 0:
            raise PayloadError(f"{what} holds {len(blob) if start is None else max(0, len(blob) - begin)} bytes; "
                               f"{count} polynomials of preset {self.preset.name!r} have {count * size}")
        if count == 0:
            return np.empty((0, self.limbs, self.n), dtype=np.uint64)
        data = np.frombuffer(blob, dtype=np.uint8)
        if out is None:
            out = np.empty((count, self.limbs, self.n), dtype=np.uint64)
        elif out.shape != (count, self.limbs, self.n) or out.dtype != np.uint64:
            raise ValueError(f"out must be a uint64 array of shape {(count, self.limbs, self.n)}")
        in_place = count if stop + 8 <= len(data) else count - 1
        if in_place < count:
            tail = np.zeros(size + 8, dtype=np.uint8)
            tail[:size] = data[stop - size:stop]
        offset = 0
        for i, w in enumerate(self.widths):
            groups = group(w)
            step = groups * w // 8  # bytes from one group to the next
            for j in range(groups):
                first, shift = divmod(j * w, 8)
                places = self.n // groups
                if in_place:
                    view = np.ndarray((in_place, places), dtype="<u8", buffer=data, offset=begin + offset + first,
                                      strides=(size, step))
                    read_bits(view, shift, w, out[:in_place, i, j::groups])
                if in_place < count:
                    last = np.ndarray((places,), dtype="<u8", buffer=tail, offset=offset + first, strides=(step,))
                    read_bits(last, shift, w, out[-1, i, j::groups])
            if int(out[:, i].max()) >= self.primes[i]:  # one reduction pass, no boolean array
                raise PayloadError(f"{what} holds a residue beyond its prime; it is not a valid ciphertext half")
            offset += w * self.n // 8
        return out

    def add_into(self, acc: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``acc += x`` modulo each prime, in place (residues below primes < 2^61: the sum fits)."""
        np.add(acc, x, out=acc)
        np.subtract(acc, self.q, out=acc, where=acc >= self.q)
        return acc

    @property
    def lazy_terms(self) -> int:
        """How many residues one uint64 can hold added without a reduction (each is below its prime,
        so ``k`` of them stay below ``k * q``): 255 for 56-bit primes, 15 for 60-bit ones."""
        return (2**64 - 1) // max(self.primes)

    def add_lazy(self, acc: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``acc += x`` without reducing, in place: one pass instead of three. The caller counts the
        terms in ``acc`` and calls :meth:`reduce` before it holds more than :attr:`lazy_terms`."""
        np.add(acc, x, out=acc)
        return acc

    def reduce(self, acc: np.ndarray) -> np.ndarray:
        """``acc`` modulo each prime, in place: residues again after :meth:`add_lazy`."""
        np.remainder(acc, self.q, out=acc)
        return acc

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
        """A data-level ciphertext holding ``polys`` (2 to :data:`MAX_POLYS`), at scale 1 with
        ``unit`` (a batch), else at the preset's scale (then exactly 2); ``secret``: nothing of them is
        left in a scratch file or buffer (in place, none is made)."""
        if sealmem.available():
            ct = sealmem.new_ciphertext(self.seal, self.parms_id, len(polys), ntt=ntt,
                                        scale=1.0 if unit else self.scale)
            view = sealmem.ciphertext_view(ct)
            for i, poly in enumerate(polys):
                view[i] = poly
            return ct
        prefix = batch_template(self.preset, len(polys)) if unit else self._ct_prefix
        blob = self._blob(prefix if ntt else _coefficient_form(prefix), *polys)
        try:
            return sealio.load_own(sealapi.Ciphertext, self.seal, blob, what="polynomials", secret=secret)
        finally:
            if secret:
                blob[:] = bytes(len(blob))

    def _plaintext_of(self, poly: np.ndarray, *, unit: bool, secret: bool = False) -> sealapi.Plaintext:
        """A data-level plaintext (NTT form) holding ``poly``, at scale 1 with ``unit``, else at the
        preset's scale; ``secret`` as for :meth:`_ciphertext_of`."""
        if sealmem.available():
            plain = sealmem.new_plaintext(self.parms_id, self.limbs * self.n, scale=1.0 if unit else self.scale)
            sealmem.plaintext_view(plain)[:] = poly.reshape(-1)
            return plain
        blob = self._blob(self._pt_unit_prefix if unit else self._pt_prefix, poly)
        try:
            return sealio.load_own(sealapi.Plaintext, self.seal, blob, what="a plaintext", secret=secret)
        finally:
            if secret:
                blob[:] = bytes(len(blob))

    def _polys_of(self, ct: sealapi.Ciphertext, *, secret: bool = False) -> np.ndarray:
        """A copy of ``ct``'s polynomials, a ``(size, limbs, N)`` array; ``secret``: nothing of them is
        left in the scratch file (the caller wipes ``ct`` itself)."""
        if sealmem.available():
            return sealmem.ciphertext_view(ct).copy()
        polys = ct.size() * self.limbs * self.n
        raw = sealio.dump_own(ct, max_inflated=len(self._ct_prefix) + 8 * polys, secret=secret)
        return np.frombuffer(raw, dtype="<u8", count=polys, offset=len(raw) - 8 * polys).reshape(
            ct.size(), self.limbs, self.n).copy()

    def _wipe(self, ct: sealapi.Ciphertext) -> None:
        """Zero ``ct``'s polynomials before SEAL frees them (its memory pool does not clear)."""
        if sealmem.available():
            sealmem.ciphertext_view(ct).fill(0)
        else:
            _nonzero(self.evaluator.sub_inplace, ct, ct)  # SEAL computes the zeros, then refuses to return them

    def ciphertext(self, c0: np.ndarray, c1: np.ndarray, *, ntt: bool = True) -> sealapi.Ciphertext:
        return self._ciphertext_of(c0, c1, ntt=ntt)

    def plaintext(self, a: np.ndarray, *, secret: bool = False) -> sealapi.Plaintext:
        """``a`` (NTT form) as a SEAL plaintext; ``secret``: leave nothing of it in the scratch file."""
        return self._plaintext_of(a, unit=False, secret=secret)

    def plaintext_array(self, plain: sealapi.Plaintext, *, secret: bool = False) -> np.ndarray:
        """A copy of ``plain``'s residues (NTT form); ``secret``: then zeroed in ``plain`` and the scratch file."""
        if sealmem.available():
            out = sealmem.plaintext_view(plain).reshape(self.limbs, self.n).copy()
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

    def decode(self, plain: sealapi.Plaintext) -> np.ndarray:
        z = np.asarray(self.encoder.decode_complex(plain))
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
        """The **raw** values of ``(c0, a)``: for a key holder's own use, never to release as they are."""
        plain = self.decrypt_plain(c0, a, secret)
        try:
            return self.decode(plain)
        finally:
            plain.set_zero()  # SEAL's pool keeps what it frees

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
        out: np.ndarray = self._polys_of(ct)[0]
        return out

    def mul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``x * y`` of two polynomials in NTT form (pointwise modulo each prime)."""
        if not y.any():
            return self.zeros()
        ct = self.ciphertext(x, np.ones_like(x), ntt=True)  # second half y after the product: never zero
        self.evaluator.multiply_plain_inplace(ct, self._plaintext_of(y, unit=True))
        out: np.ndarray = self._polys_of(ct)[0]
        return out

    def secret_ntt(self, secret: SecretContext) -> np.ndarray:
        """A secret key's residues at the data level, NTT form (the decryption of ``(0, 1)``)."""
        return self.plaintext_array(self.decrypt_plain(self.zeros(), self._ones, secret), secret=True)

    def factor(self, key: np.ndarray) -> sealapi.Plaintext:
        """``key`` (data-level residues, NTT form: a secret key or a share of one) as a SEAL plaintext
        at scale 1, a factor of :meth:`ntt_plus_products`; no copy of it is left in a scratch file or
        buffer (call ``set_zero()`` on it once it is no longer needed)."""
        return self._plaintext_of(key, unit=True, secret=True)

    def ntt_plus_products(self, x_coeff: np.ndarray, y: np.ndarray, factor: sealapi.Plaintext, *,
                          negate: bool = False, secret: bool = False) -> np.ndarray:
        """``NTT(x_k) + y_k * f`` (``- y_k * f`` with ``negate``) for ``(count, limbs, N)`` arrays
        ``x_coeff`` (coefficient form) and ``y`` (NTT form) and ``factor = factor(f)``: a
        ``(count, limbs, N)`` array; ``secret``: the results are secret (wiped from SEAL's objects
        and the scratch file once copied out).

        SEAL transforms and multiplies every polynomial of a ciphertext in one call, so up to
        :data:`BATCH` ``x_k`` go to it as the polynomials of one ciphertext, ``(1, x_0, ..., 1)``,
        and the ``y_k`` as another, ``(0, y_0, ...)``. The constants keep what SEAL holds at the end
        public (no product of a constant with ``f``, which would be the key itself) and SEAL from
        refusing a ciphertext of zeros (a zero ``x`` is legitimate). The copy of the ``x_k`` handed
        to SEAL (for a client ``m + e``, which with the public ``c0`` and ``a`` gives ``a*s``) becomes
        the ``c0`` in place (through a file: passes it as a secret, wiped), and the products are
        zeroed before SEAL frees them, since its memory pool does not clear what it frees; the
        caller wipes its own ``x_coeff``."""
        if y.shape != x_coeff.shape or x_coeff.shape[1:] != (self.limbs, self.n):
            raise ValueError(f"x_coeff and y must both be (count, {self.limbs}, {self.n}) arrays")
        count = x_coeff.shape[0]
        out = np.empty_like(x_coeff)
        for b0 in range(0, count, BATCH):
            k = min(BATCH, count - b0)
            ct = self._ciphertext_of(self._one, *x_coeff[b0:b0 + k], self._one, ntt=False, unit=True, secret=True)
            self.evaluator.transform_to_ntt_inplace(ct)
            products = self._ciphertext_of(self._zero, *y[b0:b0 + k], ntt=True, unit=True)
            if _nonzero(self.evaluator.multiply_plain_inplace, products, factor):
                (self.evaluator.sub_inplace if negate else self.evaluator.add_inplace)(ct, products)
                self._wipe(products)
            # else every product is zero (a zero factor or zero halves): nothing to add
            out[b0:b0 + k] = self._polys_of(ct, secret=secret)[1:k + 1]
            if secret:
                self._wipe(ct)
        return out

    def decode_ntt(self, x: np.ndarray) -> np.ndarray:
        """The values a plaintext polynomial (NTT form, at the preset's scale) encodes (a raw sum:
        nothing of it is left in a scratch file or SEAL's object)."""
        plain = self.plaintext(x, secret=True)
        try:
            return self.decode(plain)
        finally:
            plain.set_zero()

    def full_ciphertext(self, c0: np.ndarray, a: np.ndarray) -> sealapi.Ciphertext:
        """``(c0, a)`` as a SEAL ciphertext at the data level, for server-side circuits."""
        return self.ciphertext(c0, a, ntt=True)
