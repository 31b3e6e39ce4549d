"""The server-scored attention circuit on CKKS ciphertexts, with the public context only.

For every client ``k`` and layer ``l`` (``deep`` preset: N = 16384, 60 + 7 x 40 + 60 bits):

1. ``u_kl`` - the layer's values of ``d_k`` cut out of the packed ciphertexts with constant masks
   (``u = M1 * z + M2 * conj(z)``, exact even where a layer boundary splits a complex slot);
2. ``t_kl = ||d_kl||^2 / hi`` - squares via ``u * conj(u)``, then a rotate-and-sum over the slots;
3. ``omega_kl = p(t_kl)`` with ``p`` the degree-7 Chebyshev fit of ``exp(hi * (t - 1/2) / tau)``
   on ``[0, 1]`` (:func:`weight_polynomial`);
4. ``sum_k omega_kl * u_kl`` and ``sum_k omega_kl`` in the ratio-form layout, which the key holders
   release (noise-flooded) and divide.

Depth: masks 1, squares 1, polynomial 4 (Paterson-Stockmeyer with ``t^2, t^3, t^4``), product 1:
7 levels. The server uses the relinearisation key and 14 Galois keys (power-of-two rotations,
conjugation). The rule (FedAtt with squared-L2 scores) and its protocol live in
:mod:`fedattn.protocols.server_scored`.

Example:
    >>> coeffs, max_abs_err, max_rel_err = weight_polynomial(4.0, 1.0)
    >>> len(coeffs), max_rel_err < 1e-3
    (8, True)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tenseal.sealapi as sealapi
from numpy.polynomial import chebyshev, polynomial

from .errors import InvalidParametersError
from .keys import PublicContext
from .packing import Layout

__all__ = ["Circuit", "weight_polynomial", "clip_layer_norms", "score_and_combine", "omega_max", "ratio_vector",
           "DEGREE", "SERVER_SCORED_NOISE"]

DEGREE = 7


def weight_polynomial(hi: float, temperature: float, degree: int = DEGREE) -> tuple[np.ndarray, float, float]:
    """Power-basis coefficients of the fit of ``exp(hi * (t - 1/2) / tau)`` on ``t`` in [0, 1],
    with its measured max absolute and relative error.

    The shift by ``hi / 2`` (any public constant cancels in the ratio) centres the weights on 1:
    the released ratio's flooding error is divided by the total weight, so weights near
    ``exp(-hi / tau)`` would cost precision.
    """
    t = np.linspace(0.0, 1.0, 20001)
    target = np.exp(hi * (t - 0.5) / temperature)
    cheb = chebyshev.chebfit(2 * t - 1, target, degree)
    coeffs = np.zeros(degree + 1)  # compose with u = 2t - 1 to get coefficients in t
    for i, c in enumerate(chebyshev.cheb2poly(cheb)):
        coeffs += c * _binomial_shift(i, degree)
    approx = polynomial.polyval(t, coeffs)
    err = np.abs(approx - target)
    return coeffs, float(err.max()), float((err / target).max())


def _binomial_shift(i: int, degree: int) -> np.ndarray:
    """Coefficients in t of (2t - 1)^i."""
    out = np.zeros(degree + 1)
    for j in range(i + 1):
        out[j] = math.comb(i, j) * (2.0**j) * (-1.0) ** (i - j)
    return out


def clip_layer_norms(update: dict[str, np.ndarray], max_sq_norm: float) -> dict[str, np.ndarray]:
    """Scale each layer so that ``||d_l||^2 <= max_sq_norm`` (the protocol's public range)."""
    out = {}
    for name, arr in update.items():
        sq = float(np.sum(np.square(arr, dtype=np.float64)))
        out[name] = arr if sq <= max_sq_norm else (arr * math.sqrt(max_sq_norm / sq)).astype(arr.dtype)
    return out


class Circuit:
    """CKKS arithmetic that keeps levels aligned and scales pinned to 2^scale_bits."""

    def __init__(self, ctx: PublicContext) -> None:
        if ctx.relin_keys is None or ctx.galois_keys is None:
            raise InvalidParametersError("server-scored aggregation needs a 'deep' public context with relin and galois keys")
        self.ctx, self.ev, self.enc = ctx, ctx.evaluator, ctx.encoder
        self.scale = 2.0**ctx.preset.scale_bits
        self.slots = ctx.preset.slots

    def _pin(self, ct: sealapi.Ciphertext) -> sealapi.Ciphertext:
        ct.scale = self.scale  # rescaling by a prime ~2^40 leaves a scale within ~1e-6 of it
        return ct

    def _at(self, ct: sealapi.Ciphertext, parms_id: Any) -> sealapi.Ciphertext:
        out = sealapi.Ciphertext()
        self.ev.mod_switch_to(ct, parms_id, out)  # a copy when already at that level
        return out

    def aligned(self, a: sealapi.Ciphertext, b: sealapi.Ciphertext) -> tuple[sealapi.Ciphertext, sealapi.Ciphertext]:
        """Copies of ``a`` and ``b`` at the lower of their two levels."""
        low = a if a.coeff_modulus_size() <= b.coeff_modulus_size() else b
        return self._at(a, low.parms_id()), self._at(b, low.parms_id())

    def copy(self, ct: sealapi.Ciphertext) -> sealapi.Ciphertext:
        return self._at(ct, ct.parms_id())

    def _const(self, value: complex | float, like: sealapi.Ciphertext, scale: float | None = None) -> sealapi.Plaintext:
        pt = sealapi.Plaintext()
        self.enc.encode(value, like.parms_id(), like.scale if scale is None else scale, pt)
        return pt

    def mul_plain(self, ct: sealapi.Ciphertext, values: complex | float | np.ndarray) -> sealapi.Ciphertext:
        pt = sealapi.Plaintext()
        if isinstance(values, np.ndarray):
            self.enc.encode(values.astype(np.complex128).tolist(), ct.parms_id(), self.scale, pt)
        else:
            self.enc.encode(values, ct.parms_id(), self.scale, pt)
        out = sealapi.Ciphertext()
        self.ev.multiply_plain(ct, pt, out)
        self.ev.rescale_to_next_inplace(out)
        return self._pin(out)

    def mul(self, a: sealapi.Ciphertext, b: sealapi.Ciphertext) -> sealapi.Ciphertext:
        a, b = self.aligned(a, b)
        out = sealapi.Ciphertext()
        self.ev.multiply(a, b, out)
        self.ev.relinearize_inplace(out, self.ctx.relin_keys)
        self.ev.rescale_to_next_inplace(out)
        return self._pin(out)

    def add(self, a: sealapi.Ciphertext, b: sealapi.Ciphertext) -> sealapi.Ciphertext:
        a, b = self.aligned(a, b)
        out = sealapi.Ciphertext()
        self.ev.add(a, b, out)
        return out

    def add_const(self, a: sealapi.Ciphertext, value: float) -> sealapi.Ciphertext:
        out = sealapi.Ciphertext()
        self.ev.add_plain(a, self._const(value, a), out)
        return out

    def conj(self, a: sealapi.Ciphertext) -> sealapi.Ciphertext:
        out = sealapi.Ciphertext()
        self.ev.complex_conjugate(a, self.ctx.galois_keys, out)
        return out

    def slot_sum(self, a: sealapi.Ciphertext) -> sealapi.Ciphertext:
        acc = self.copy(a)
        step = 1
        while step < self.slots:
            rot = sealapi.Ciphertext()
            self.ev.rotate_vector(acc, step, self.ctx.galois_keys, rot)
            self.ev.add_inplace(acc, rot)
            step *= 2
        return acc

    def poly(self, t: sealapi.Ciphertext, coeffs: np.ndarray) -> sealapi.Ciphertext:
        """Degree-7 polynomial by Paterson-Stockmeyer: (c0..c3)(t) + t^4 (c4..c7)(t); depth 4."""
        t2 = self.mul(t, t)
        t3, t4 = self.mul(t2, t), self.mul(t2, t2)
        powers = [t, t2, t3]

        def cubic(c: np.ndarray) -> sealapi.Ciphertext:
            acc = None
            for i, p in enumerate(powers, start=1):
                term = self.mul_plain(p, float(c[i]))
                acc = term if acc is None else self.add(acc, term)
            return self.add_const(acc, float(c[0]))

        return self.add(cubic(coeffs[:4]), self.mul(t4, cubic(coeffs[4:])))


def _masks(layout: Layout, per_ct: int, hi: float) -> dict[tuple[int, int], tuple[np.ndarray, ...]]:
    """(chunk, layer) -> (M1, M2, M1/sqrt(hi), M2/sqrt(hi)) slot masks cutting the layer out."""
    out: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
    for j in range(layout.chunks(per_ct)):
        base = j * per_ct
        for layer, lo, hi_idx in layout.layer_ranges(base, min(base + per_ct, layout.total)):
            m = np.zeros(per_ct)
            m[lo - base:hi_idx - base] = 1.0
            m_re, m_im = m[0::2], m[1::2]
            m1, m2 = (m_re + m_im) / 2, (m_re - m_im) / 2
            s = 1.0 / math.sqrt(hi)
            out[(j, layer)] = (m1, m2, m1 * s, m2 * s)
    return out


def score_and_combine(clients: list[list[sealapi.Ciphertext]], public: PublicContext, *, layout: Layout, hi: float,
                      temperature: float) -> list[sealapi.Ciphertext]:
    """``sum_k omega_kl * d_kl`` per chunk, then ``sum_k omega_kl`` per layer (:func:`output_layout`),
    ``omega_kl = p(||d_kl||^2 / hi)``; ``clients[k]`` holds client k's ciphertexts, one per chunk."""
    circuit = Circuit(public)
    per_ct = public.preset.values_per_ciphertext
    coeffs, _, _ = weight_polynomial(hi, temperature)
    masks = _masks(layout, per_ct, hi)
    n_layers = len(layout.layers)
    numerators: dict[int, sealapi.Ciphertext] = {}
    denominators: dict[int, sealapi.Ciphertext] = {}
    for cts in clients:
        conjs = [circuit.conj(ct) for ct in cts]  # only boundary slots use them
        parts: dict[tuple[int, int], sealapi.Ciphertext] = {}
        squares: dict[int, sealapi.Ciphertext] = {}
        for (j, layer), (m1, m2, m1s, m2s) in masks.items():
            part, us = circuit.mul_plain(cts[j], m1), circuit.mul_plain(cts[j], m1s)
            if np.any(m2):  # a layer boundary splits a slot: its real and imaginary parts differ
                part = circuit.add(part, circuit.mul_plain(conjs[j], m2))
                us = circuit.add(us, circuit.mul_plain(conjs[j], m2s))
            parts[(j, layer)] = part
            sq = circuit.mul(us, circuit.conj(us))
            squares[layer] = sq if layer not in squares else circuit.add(squares[layer], sq)
        for layer in range(n_layers):
            omega = circuit.poly(circuit.slot_sum(squares[layer]), coeffs)
            for (j, lay), part in parts.items():
                if lay != layer:
                    continue
                term = circuit.mul(omega, part)
                numerators[j] = term if j not in numerators else circuit.add(numerators[j], term)
            den = circuit.mul_plain(omega, complex(1.0, 1.0))  # omega in the real and the imaginary part
            denominators[layer] = den if layer not in denominators else circuit.add(denominators[layer], den)
    return [numerators[j] for j in range(layout.chunks(per_ct))] + [denominators[i] for i in range(n_layers)]


def omega_max(hi: float, temperature: float) -> float:
    """The largest weight the polynomial produces on [0, 1] (with its fitting error): a key holder's
    bound on one client's weight."""
    return math.exp(hi / (2 * temperature)) * 1.05


def ratio_vector(decoded: list[np.ndarray], layout: Layout, per_ct: int) -> np.ndarray:
    """The circuit's decrypted outputs in the ratio-form layout (``layout`` plus one weight per
    layer, as :func:`secagg.roles.WEIGHTS_ENTRY` uploads have): numerators, then denominators."""
    chunks = layout.chunks(per_ct)
    numerators = np.concatenate(decoded[:chunks])[:layout.total]
    denominators = np.array([values[0] for values in decoded[chunks:]])
    return np.concatenate([numerators, denominators])


#: Error std per value of one client's contribution after the depth-7 circuit (measured by
#: tests/fedattn/test_server_scored.py; the polynomial's own approximation error is separate).
SERVER_SCORED_NOISE = 1e-8
