"""The server-scored attention circuit on CKKS ciphertexts, with the public context only.

For every client ``k`` and layer ``l`` (``deep`` preset: N = 16384, 60 + 7 x 40 + 60 bits):

1. ``d_kl`` - the layer's values cut out of the packed ciphertexts with constant masks
   (``m1 * z + m2 * conj(z)``, exact even where a layer boundary splits a complex slot);
2. ``t_kl = ||d_kl||^2 / hi`` - per chunk one product ``z * conj(z)`` (``re^2 + im^2`` per slot;
   with ``z^2 + conj(z^2)`` too where a slot is split between layers), masked per layer, then a
   rotate-and-sum over a window just wide enough for the slots the layer occupies, several
   clients side by side in one ciphertext (:class:`LayerPlan`);
3. ``omega_kl = p(t_kl)`` with ``p`` the degree-7 Chebyshev fit of ``exp(hi * (t - 1/2) / tau)``
   on ``[0, 1]`` (:func:`weight_polynomial`), once for all the clients of a ciphertext;
4. ``sum_k omega_kl * d_kl`` (the values packed and rotated to where the window sum left their
   weight, multiplied, then folded onto one place) and ``sum_k omega_kl``, which the key holders
   release (noise-flooded), rotate back and divide (:func:`ratio_vector`).

Depth: masks and squares 2, polynomial 4 (Paterson-Stockmeyer with ``t^2, t^3, t^4``), product 1:
7 levels. The server uses the relinearisation key and 14 Galois keys (power-of-two rotations,
conjugation). Key switches on the digits MLP (4 layers, one chunk) for 10 clients: 10 conjugations,
55 relinearisations and 185 rotations, where one client at a time with every slot summed took 50,
240 and 520. Values are masked, packed and rotated at the level where they meet their weight,
where a key switch costs the fewest primes. The rule (FedAtt with squared-L2 scores) and its
protocol live in :mod:`fedattn.protocols.server_scored`.

Example:
    >>> coeffs, max_abs_err, max_rel_err = weight_polynomial(4.0, 1.0)
    >>> len(coeffs), max_rel_err < 1e-3
    (8, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal.sealapi as sealapi
from numpy.polynomial import chebyshev, polynomial

from .errors import InvalidParametersError
from .keys import PublicContext
from .packing import Layout

__all__ = ["Circuit", "weight_polynomial", "clip_layer_norms", "score_and_combine", "omega_max", "ratio_vector",
           "LayerPlan", "layer_plans", "circuit_outputs", "DEGREE", "SERVER_SCORED_NOISE"]

DEGREE = 7
_POLY_DEPTH = 4  # levels that Circuit.poly consumes


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
        self._masks: dict[tuple[bytes, tuple[int, ...]], sealapi.Plaintext] = {}

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
        if isinstance(values, np.ndarray):  # masks repeat for every client: encoded once per level
            key = (values.astype(np.complex128).tobytes(), tuple(ct.parms_id()))
            pt = self._masks.get(key)
            if pt is None:
                pt = self._masks[key] = sealapi.Plaintext()
                self.enc.encode(values.astype(np.complex128).tolist(), ct.parms_id(), self.scale, pt)
        else:
            pt = sealapi.Plaintext()
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

    def window_sum(self, a: sealapi.Ciphertext, steps: int) -> sealapi.Ciphertext:
        """Slot ``i`` of the result: the sum of slots ``i .. i + 2^steps - 1`` of ``a`` (cyclic)."""
        acc = self.copy(a)
        for i in range(steps):
            rot = sealapi.Ciphertext()
            self.ev.rotate_vector(acc, 1 << i, self.ctx.galois_keys, rot)
            self.ev.add_inplace(acc, rot)
        return acc

    def rotate(self, a: sealapi.Ciphertext, steps: int) -> sealapi.Ciphertext:
        """``a`` rotated left by ``steps`` (a power of two, or 0: ``a`` itself)."""
        if steps == 0:
            return a
        out = sealapi.Ciphertext()
        self.ev.rotate_vector(a, steps, self.ctx.galois_keys, out)
        return out

    def pack(self, items: list[sealapi.Ciphertext], unit: int) -> sealapi.Ciphertext:
        """``sum_i items[i]`` rotated left by ``i * unit``, in ``len(items) - 1`` rotations (a tree)."""
        level, step = list(items), unit
        while len(level) > 1:
            level = [self.add(level[i], self.rotate(level[i + 1], step)) if i + 1 < len(level) else level[i]
                     for i in range(0, len(level), 2)]
            step *= 2
        return level[0]

    def fold(self, a: sealapi.Ciphertext, unit: int, count: int) -> sealapi.Ciphertext:
        """Slot ``i``: the sum of slots ``i, i + unit, .., i + (count - 1) * unit`` of ``a``."""
        step = unit
        while step < unit * count:
            a = self.add(a, self.rotate(a, step))
            step *= 2
        return a

    def lower(self, a: sealapi.Ciphertext, levels: int) -> sealapi.Ciphertext:
        """``a`` with ``levels`` fewer primes (the same message; products and rotations get cheaper)."""
        out = self.copy(a)
        for _ in range(levels):
            self.ev.mod_switch_to_next_inplace(out)
        return out

    def poly(self, t: sealapi.Ciphertext, coeffs: np.ndarray) -> sealapi.Ciphertext:
        """Degree-7 polynomial by Paterson-Stockmeyer: (c0..c3)(t) + t^4 (c4..c7)(t); depth 4."""
        t2 = self.mul(t, t)
        t3, t4 = self.mul(t2, t), self.mul(t2, t2)
        powers = [t, t2, t3]

        def cubic(c: np.ndarray) -> sealapi.Ciphertext:
            # the three products at t^3's level, added before one rescale (not three)
            acc = sealapi.Ciphertext()
            for i, p in enumerate(powers, start=1):
                term = sealapi.Ciphertext()
                self.ev.multiply_plain(self._at(p, t3.parms_id()), self._const(float(c[i]), t3, self.scale), term)
                if i == 1:
                    acc = term
                else:
                    self.ev.add_inplace(acc, term)
            self.ev.rescale_to_next_inplace(acc)
            return self.add_const(self._pin(acc), float(c[0]))

        return self.add(cubic(coeffs[:4]), self.mul(t4, cubic(coeffs[4:])))


@dataclass(frozen=True)
class LayerPlan:
    """Where layer ``l``'s score is summed and its weight meets its values (slot geometry only).

    The layer's values occupy the cyclic arc of ``width`` slots from ``start`` (over all chunks, as
    their squares are added slot by slot). Rotating left by ``1, 2, .., 2^(steps-1)`` and adding
    leaves in slot ``i`` the sum of the ``2^steps`` slots from ``i``: the whole layer's sum wherever
    that window covers the arc, in slots ``start + width - 2^steps`` to ``start``. So the layer's
    values are rotated left by ``shift`` (a power of two) into that region before they meet their
    weight. ``steps = log2(slots)`` sums every slot (no shift): the cost of a wide layer.

    ``pack`` clients share each of these ciphertexts, client ``i`` of a pack rotated left by
    ``i * 2^steps`` (their windows never meet): one window sum and one polynomial for all of them.
    The weighted values are then folded (``log2(pack)`` rotations) so that every client's land
    ``offset`` slots left of where they belong, and the weights' sum in slot :attr:`weight_slot`.
    """

    start: int
    width: int
    steps: int
    shift: int
    pack: int
    slots: int

    @property
    def offset(self) -> int:
        """How far left of their place the released values of this layer come out."""
        return (self.shift + (self.pack - 1) * (1 << self.steps)) % self.slots

    @property
    def weight_slot(self) -> int:
        """The slot of the weights' output that holds the sum of the weights."""
        return (self.start - (self.pack - 1) * (1 << self.steps)) % self.slots


def _plan_for(start: int, width: int, slots: int, clients: int) -> LayerPlan:
    """The cheapest plan: every slot summed for one client at a time, or the narrowest window that
    fits the arc (with its shift) and as many clients per ciphertext as such windows fit."""
    full = slots.bit_length() - 1
    options = [(full, 0)]
    if width == 1:
        options.append((0, 0))
    elif width < slots:
        c = 1 << (width - 2).bit_length()  # the least power of two >= width - 1
        k = next((k for k in range(full) if c <= (1 << k) - width), None)
        if k is not None:
            options.append((k, c))

    def plan(steps: int, shift: int) -> LayerPlan:
        pack = min(slots >> steps, 1 << max(clients - 1, 0).bit_length())
        narrow = steps < full
        return LayerPlan(start=start if narrow else 0, width=width if narrow else slots, steps=steps, shift=shift,
                         pack=pack, slots=slots)

    def key_switches(p: LayerPlan) -> int:  # rotations and relinearisations, all clients
        packs = -(-clients // p.pack)
        packing = 2 * (clients - packs)  # the squares and the values, a tree per pack
        return packs * (p.steps + (p.shift > 0) + _POLY_DEPTH + 1) + packing + 2 * (p.pack.bit_length() - 1)

    return min((plan(k, c) for k, c in options), key=key_switches)


def layer_plans(layout: Layout, per_ct: int, *, clients: int) -> list[LayerPlan]:
    """:class:`LayerPlan` of each layer of ``layout`` for ciphertexts of ``per_ct`` values and a sum
    of ``clients`` members (the size of a pack follows from it)."""
    slots, plans = per_ct // 2, []
    for spec in layout.layers:
        first, last = spec.offset, spec.stop - 1
        a, b = (first % per_ct) // 2, (last % per_ct) // 2
        spans = last // per_ct - first // per_ct
        if spans == 0:
            width = b - a + 1
        elif spans == 1 and b < a:  # the end of one chunk and the start of the next: a cyclic arc
            width = slots - a + b + 1
        else:
            width = slots
        plans.append(_plan_for(a, width, slots, clients))
    return plans


def _pairs(layout: Layout, per_ct: int) -> list[tuple[int, int]]:
    """``(chunk, layer)`` for every layer's share of every chunk, in chunk order: the numerator outputs."""
    return [(j, layer) for j in range(layout.chunks(per_ct))
            for layer, _, _ in layout.layer_ranges(j * per_ct, (j + 1) * per_ct)]


def circuit_outputs(layout: Layout, per_ct: int) -> int:
    """How many ciphertexts the circuit returns: a numerator per layer and chunk, then a weight per layer."""
    return len(_pairs(layout, per_ct)) + len(layout.layers)


_Masks = list[dict[int, tuple[np.ndarray, np.ndarray]]]


def _layer_masks(layout: Layout, per_ct: int) -> _Masks:
    """Per chunk, layer -> ``(m1, m2)``: ``m1 z + m2 conj(z)`` keeps the layer's real and imaginary parts."""
    out: _Masks = []
    for j in range(layout.chunks(per_ct)):
        masks = {}
        for layer, lo, hi_idx in layout.layer_ranges(j * per_ct, (j + 1) * per_ct):
            m = np.zeros(per_ct)
            m[lo - j * per_ct:hi_idx - j * per_ct] = 1.0
            masks[layer] = ((m[0::2] + m[1::2]) / 2, (m[0::2] - m[1::2]) / 2)
        out.append(masks)
    return out


def _cut(circuit: Circuit, cts: list[sealapi.Ciphertext], chunk_masks: _Masks,
         hi: float) -> tuple[dict[tuple[int, int], sealapi.Ciphertext], dict[int, sealapi.Ciphertext]]:
    """One client's values per (chunk, layer), dropped to the level where they meet their weight, and
    its masked squares per layer (divided by ``hi``)."""
    parts: dict[tuple[int, int], sealapi.Ciphertext] = {}
    squares: dict[int, sealapi.Ciphertext] = {}
    for j, (ct, masks) in enumerate(zip(cts, chunk_masks)):
        conj = circuit.conj(ct)
        power = circuit.mul(ct, conj)  # re^2 + im^2 per slot
        cross = None
        if any(np.any(m2) for _, m2 in masks.values()):  # a slot shared by two layers: re^2 - im^2 too
            zz = circuit.mul(ct, ct)
            cross = circuit.add(zz, circuit.conj(zz))  # 2 (re^2 - im^2)
        # the values are masked at the level where they meet their weight (one above, for the rescale):
        # cheaper to multiply, hold and rotate there
        low, low_conj = circuit.lower(ct, _POLY_DEPTH + 1), None
        for layer, (m1, m2) in masks.items():
            part = circuit.mul_plain(low, m1)
            sq = circuit.mul_plain(power, m1 / hi)  # m_re re^2 + m_im im^2 = m1 (re^2 + im^2) + m2 (re^2 - im^2)
            if np.any(m2):
                if low_conj is None:
                    low_conj = circuit.lower(conj, _POLY_DEPTH + 1)
                part = circuit.add(part, circuit.mul_plain(low_conj, m2))
                sq = circuit.add(sq, circuit.mul_plain(cross, m2 / (2 * hi)))
            parts[(j, layer)] = part
            squares[layer] = sq if layer not in squares else circuit.add(squares[layer], sq)
    return parts, squares


def score_and_combine(clients: list[list[sealapi.Ciphertext]], public: PublicContext, *, layout: Layout, hi: float,
                      temperature: float) -> list[sealapi.Ciphertext]:
    """``sum_k omega_kl * d_kl`` per (chunk, layer), then ``sum_k omega_kl`` per layer, each ``offset``
    slots left of its place (:class:`LayerPlan`), ``omega_kl = p(||d_kl||^2 / hi)``; ``clients[k]``
    holds client k's ciphertexts, one per chunk."""
    circuit = Circuit(public)
    per_ct = public.preset.values_per_ciphertext
    coeffs, _, _ = weight_polynomial(hi, temperature)
    plans, pairs = layer_plans(layout, per_ct, clients=len(clients)), _pairs(layout, per_ct)
    masks = _layer_masks(layout, per_ct)  # the same for every client
    cut = [_cut(circuit, cts, masks, hi) for cts in clients]
    numerators: dict[tuple[int, int], sealapi.Ciphertext] = {}
    weights: list[sealapi.Ciphertext] = []
    for layer, plan in enumerate(plans):
        unit, chunks = 1 << plan.steps, [j for j, lay in pairs if lay == layer]
        weight = None
        for first in range(0, len(cut), plan.pack):
            group = cut[first:first + plan.pack]
            omega = circuit.poly(circuit.window_sum(circuit.pack([sq[layer] for _, sq in group], unit), plan.steps),
                                 coeffs)
            for j in chunks:
                values = circuit.rotate(circuit.pack([parts[(j, layer)] for parts, _ in group], unit), plan.shift)
                term = circuit.mul(omega, values)
                numerators[(j, layer)] = term if (j, layer) not in numerators else circuit.add(numerators[(j, layer)], term)
            # each present client's weight, in the real and the imaginary part, at its own window's
            # start; nothing elsewhere (an empty window's p(0) is not 0)
            where = np.zeros(per_ct // 2, dtype=np.complex128)
            where[(plan.start - unit * np.arange(len(group))) % (per_ct // 2)] = 1.0 + 1.0j
            den = circuit.mul_plain(omega, where)
            weight = den if weight is None else circuit.add(weight, den)
        for j in chunks:
            numerators[(j, layer)] = circuit.fold(numerators[(j, layer)], unit, plan.pack)
        assert weight is not None  # at least one client
        weights.append(circuit.fold(weight, unit, plan.pack))
    return [numerators[pair] for pair in pairs] + weights


def omega_max(hi: float, temperature: float) -> float:
    """The largest weight the polynomial produces on [0, 1] (with its fitting error): a key holder's
    bound on one client's weight."""
    return math.exp(hi / (2 * temperature)) * 1.05


def ratio_vector(decoded: list[np.ndarray], layout: Layout, per_ct: int, *, clients: int) -> np.ndarray:
    """The circuit's decrypted outputs in the ratio-form layout (``layout`` plus one weight per
    layer, as :func:`secagg.roles.WEIGHTS_ENTRY` uploads have): numerators, then denominators.
    Each numerator is rotated back by its layer's offset; each weight read at its slot."""
    plans, pairs = layer_plans(layout, per_ct, clients=clients), _pairs(layout, per_ct)
    numerators = np.zeros(layout.chunks(per_ct) * per_ct)
    for (j, layer), values in zip(pairs, decoded):
        back = np.roll(values.reshape(-1, 2), plans[layer].offset, axis=0).reshape(-1)  # slot s came out at s - offset
        lo, hi_idx = max(j * per_ct, layout.layers[layer].offset), min((j + 1) * per_ct, layout.layers[layer].stop)
        numerators[lo:hi_idx] = back[lo - j * per_ct:hi_idx - j * per_ct]
    weights = decoded[len(pairs):]
    denominators = np.array([values[2 * plan.weight_slot] for plan, values in zip(plans, weights)])
    return np.concatenate([numerators[:layout.total], denominators])


#: Error std per value of one client's contribution that the key holders' flooding is sized for.
#: It is below the noise the circuit really carries: encrypting the same updates twice moves the
#: output by ~1e-6 per client and value on the digits MLP (key switching in its widest layer's
#: window sum; ~2e-8 on narrow layers; measured by
#: ``tests/fedattn/test_server_scored.py::test_the_circuits_noise_per_client``), so there the
#: release's flooding margin is about 2^5.5, not the preset's 2^12 (stated in docs/security.md).
SERVER_SCORED_NOISE = 1e-8
