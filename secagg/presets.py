"""Named CKKS parameter sets.

A preset fixes everything that the key dealer, the clients and the server must agree on: ring
degree, coefficient modulus, encoding scale, the public bound on encrypted values, the evaluation
keys the server receives, and the default noise-flooding level of released decryptions.

Security is checked against the HomomorphicEncryption.org standard (Albrecht et al., 2018): for a
ternary secret and 128-bit classical security the total coefficient modulus may not exceed
27/54/109/218/438/881 bits for N = 1024 ... 32768. SEAL enforces the same table, and we ask it to.

Values are packed two per slot (real and imaginary part), so a ciphertext of ring degree N carries
N real values.

The built-in presets (bytes are per float32 value, measured by ``benchmarks/``):

=========  ======  ==================  =======  =====  ===========  ==============  ============
name       N       coeff modulus bits  scale    depth  bytes/value  noise std (1)   flood bits
=========  ======  ==================  =======  =====  ===========  ==============  ============
compact    8192    60                  2^40     0      1.9x         1.9e-10         12
strict     8192    56, 56 | 60         2^72     0      3.5x         4.4e-20 (2)     40
deep       16384   60, 40 x 7 | 60     2^40     7      10.6x        2.6e-10         12
=========  ======  ==================  =======  =====  ===========  ==============  ============

(1) standard deviation of the CKKS error of one fresh symmetric encryption, per value.
(2) below float64 resolution: decoded values are exact to ~1e-16 relative.

``compact`` halves the bytes of ``strict`` but has only 60 bits of modulus to share between
precision, headroom and flooding, so its released values are flooded 2^12 above the noise
(statistical distance to an unflooded release <= sqrt(N)/2^13 = 0.011 per decryption, see
:mod:`secagg.release`). ``strict`` spends a second data prime on headroom and floods 2^40 above
the noise (distance <= 2^-34.5) at a precision cost of 4.8e-8 per client: it is the default.

An additive preset can be sized for a federation: ``<preset>-for-<members>`` (:func:`sized_preset`)
keeps its scale and flooding, so it releases the same values, in the smallest data modulus that
holds a sum of that many members: ``compact-for-10`` is one 47-bit prime (1.47x float32),
``strict-for-10`` a 56- and a 23-bit prime (2.47x). A key holder refuses a larger sum.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ._check import integer
from .errors import InvalidParametersError, UnknownPresetError

__all__ = ["Preset", "PRESETS", "DEFAULT_PRESET", "get_preset", "register_preset", "sized_preset", "max_members",
           "MAX_MODULUS_BITS_128"]

#: HE standard, 128-bit classical security, ternary secret: max total log2(q) per ring degree.
MAX_MODULUS_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}

#: Error distribution of secfl's encryption (coefficient domain): centred binomial with eta = 21,
#: standard deviation sqrt(21 / 2) = 3.24 (the HE standard's 3.2 within 2 %).
CBD_ETA = 21
ERROR_STD = math.sqrt(CBD_ETA / 2)

EVAL_KEY_KINDS = ("relin", "galois")


def wire_bits(bits: int) -> int:
    """The bits a residue below a ``bits``-bit prime takes on the wire (see :class:`secagg.ring.Ring`):
    ``bits`` itself, unless a residue starting at some bit of a byte would not fit in the 8 bytes
    read from that byte (59 bits, at offsets 5 to 7 of 8 residues), then a whole number of bytes."""
    if bits % 8 == 0 or max(j * bits % 8 for j in range(8)) + bits <= 64:
        return bits
    return -(-bits // 8) * 8


@dataclass(frozen=True)
class Preset:
    """A named, validated set of CKKS parameters.

    Args:
        name: registry name.
        poly_modulus_degree: ring degree N (a power of two, 1024..32768).
        coeff_modulus_bits: bit sizes of the RNS primes. With more than one prime SEAL keeps the
            last one as the special (key-switching) prime; the others form the data modulus.
        scale_bits: log2 of the CKKS encoding scale.
        max_abs: public bound on the absolute value of any encrypted value. Clients are refused
            larger values and the server sizes its headroom checks with it.
        flood_bits: default noise-flooding level of released decryptions, in bits above the
            decryption noise (see :mod:`secagg.release`).
        eval_keys: evaluation keys the server context carries (``"relin"``, ``"galois"``).
        description: one line for humans.

    Example:
        >>> from secagg import get_preset
        >>> p = get_preset("compact")
        >>> p.values_per_ciphertext, p.depth, p.security_level
        (8192, 0, 128)
    """

    name: str
    poly_modulus_degree: int
    coeff_modulus_bits: tuple[int, ...]
    scale_bits: int
    max_abs: float
    flood_bits: int
    eval_keys: tuple[str, ...] = ()
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff_modulus_bits", tuple(int(b) for b in self.coeff_modulus_bits))
        object.__setattr__(self, "eval_keys", tuple(self.eval_keys))
        self._validate()

    def _validate(self) -> None:
        n = self.poly_modulus_degree
        where = f"preset {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise InvalidParametersError("preset name must be a non-empty string")
        if n not in MAX_MODULUS_BITS_128:
            raise InvalidParametersError(
                f"{where}: poly_modulus_degree={n} must be one of {sorted(MAX_MODULUS_BITS_128)}"
            )
        bits = self.coeff_modulus_bits
        if not bits or any(b < 20 or b > 60 for b in bits):
            raise InvalidParametersError(
                f"{where}: every coeff_modulus_bits entry must lie in 20..60 (SEAL's prime sizes), got {bits}"
            )
        if self.total_modulus_bits > MAX_MODULUS_BITS_128[n]:
            raise InvalidParametersError(
                f"{where}: total coefficient modulus of {self.total_modulus_bits} bits exceeds "
                f"{MAX_MODULUS_BITS_128[n]} bits, the 128-bit security bound for N={n}; "
                "use fewer or smaller primes, or a larger poly_modulus_degree"
            )
        if not (math.isfinite(self.max_abs) and self.max_abs > 0):
            raise InvalidParametersError(f"{where}: max_abs must be a positive finite number, got {self.max_abs}")
        if self.scale_bits < 20:
            raise InvalidParametersError(f"{where}: scale_bits={self.scale_bits} leaves no precision; use >= 20")
        if self.headroom_bits < 1:
            raise InvalidParametersError(
                f"{where}: scale 2^{self.scale_bits} with max_abs={self.max_abs} does not fit the "
                f"{self.data_modulus_bits}-bit data modulus; lower scale_bits or max_abs"
            )
        if not 0 <= self.flood_bits <= 64:
            raise InvalidParametersError(f"{where}: flood_bits must lie in 0..64, got {self.flood_bits}")
        unknown = set(self.eval_keys) - set(EVAL_KEY_KINDS)
        if unknown:
            raise InvalidParametersError(f"{where}: unknown eval_keys {sorted(unknown)}; allowed: {EVAL_KEY_KINDS}")
        if self.eval_keys and len(bits) < 2:
            raise InvalidParametersError(f"{where}: evaluation keys need a special prime (at least two primes)")

    # ---- derived figures -------------------------------------------------------------------
    @property
    def total_modulus_bits(self) -> int:
        return sum(self.coeff_modulus_bits)

    @property
    def data_modulus_bits(self) -> int:
        """Bits of the modulus a fresh ciphertext lives under (all primes but the special one)."""
        bits = self.coeff_modulus_bits
        return bits[0] if len(bits) == 1 else sum(bits[:-1])

    @property
    def bytes_per_float32(self) -> float:
        """Wire bytes per byte of float32 values: a ciphertext's first half, one residue per data
        prime and value (the second half travels as a seed), each in :func:`wire_bits`."""
        bits = self.coeff_modulus_bits
        return sum(wire_bits(b) for b in (bits if len(bits) == 1 else bits[:-1])) / 32

    @property
    def depth(self) -> int:
        """Multiplications (each followed by a rescale) a fresh ciphertext supports."""
        bits = self.coeff_modulus_bits
        if len(bits) <= 2:
            return 0
        # a rescale divides by the last data prime; it keeps the scale only when prime ~ scale,
        # so a data prime far from the scale buys headroom, not depth (as in ``strict``)
        return sum(1 for b in bits[1:-1] if abs(b - self.scale_bits) <= 2)

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def values_per_ciphertext(self) -> int:
        """Real values per ciphertext: two per complex slot."""
        return self.poly_modulus_degree

    @property
    def security_level(self) -> int:
        """Classical security in bits by the HE standard (validation guarantees at least 128)."""
        return 128

    @property
    def headroom_bits(self) -> float:
        """Bits between the largest encrypted value and the modulus, for sums and weights.

        An aggregate whose bound ``sum_k |w_k| * max_abs`` (times the weight scale) needs more
        bits than this would wrap around; :mod:`secagg.aggregate` refuses it beforehand.
        """
        # measured at the bottom level, after every rescale, where the least modulus is left; a
        # coefficient reaches sqrt(2) * max_abs * scale (two reals per slot): half a bit. Nominal
        # bits: the key holder checks against the primes SEAL chose (secagg.holder.max_members).
        bottom = self.data_modulus_bits - self.depth * self.scale_bits
        return bottom - 1 - self.scale_bits - math.log2(self.max_abs) - 0.5

    def noise_std(self) -> float:
        """Analytic std of the CKKS error per value of one fresh encryption.

        Coefficient error e + encoding rounding, std sqrt(ERROR_STD^2 + 1/12); the canonical
        embedding maps it to sqrt(N/2) times that per real value, divided by the scale.
        """
        n = self.poly_modulus_degree
        coeff_var = ERROR_STD**2 + 1.0 / 12.0
        return math.sqrt(n / 2.0 * coeff_var) / 2.0**self.scale_bits

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["coeff_modulus_bits"] = list(self.coeff_modulus_bits)
        d["eval_keys"] = list(self.eval_keys)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        if not isinstance(data, dict):
            raise InvalidParametersError("preset description must be a mapping")
        expected = {"name", "poly_modulus_degree", "coeff_modulus_bits", "scale_bits", "max_abs",
                    "flood_bits", "eval_keys", "description"}
        if set(data) != expected:
            raise InvalidParametersError(
                f"preset description has fields {sorted(data)}, expected {sorted(expected)}"
            )
        try:
            return cls(
                name=str(data["name"]),
                poly_modulus_degree=int(data["poly_modulus_degree"]),
                coeff_modulus_bits=tuple(int(b) for b in data["coeff_modulus_bits"]),
                scale_bits=int(data["scale_bits"]),
                max_abs=float(data["max_abs"]),
                flood_bits=int(data["flood_bits"]),
                eval_keys=tuple(str(k) for k in data["eval_keys"]),
                description=str(data["description"]),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidParametersError):
                raise
            raise InvalidParametersError(f"malformed preset description: {exc}") from exc


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset, *, overwrite: bool = False) -> Preset:
    """Add a validated preset to the registry (``overwrite=True`` replaces one of the same name)."""
    if not isinstance(preset, Preset):
        raise TypeError(f"register_preset expects a Preset, got {type(preset).__name__}")
    if preset.name in PRESETS and not overwrite and PRESETS[preset.name] != preset:
        raise InvalidParametersError(f"a different preset named {preset.name!r} is already registered")
    sized = _SIZED_NAME.fullmatch(preset.name)
    if sized and sized["base"] in PRESETS:  # the name already means the base sized for those members
        raise InvalidParametersError(f"preset name {preset.name!r} is taken: it names {sized['base']!r} sized for "
                                     f"{sized['members']} members; choose another name")
    PRESETS[preset.name] = preset
    return preset


#: ``<preset>-for-<members>``: a registered additive preset sized for sums of ``members``
_SIZED_NAME = re.compile(r"(?P<base>[A-Za-z0-9_.-]{1,64})-for-(?P<members>[1-9][0-9]{0,11})")


def get_preset(name: str | Preset) -> Preset:
    """Return the preset registered as ``name``, or ``<preset>-for-<members>`` built by
    :func:`sized_preset` (a :class:`Preset` is returned unchanged)."""
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        pass
    sized = _SIZED_NAME.fullmatch(name) if isinstance(name, str) else None
    if sized and sized["base"] in PRESETS:
        return sized_preset(sized["base"], members=int(sized["members"]))
    raise UnknownPresetError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}, or an additive one "
                             "sized for a federation as <preset>-for-<members> (e.g. compact-for-10)")


def sized_preset(base: str | Preset, *, members: int) -> Preset:
    """``base`` in the smallest data modulus that holds a sum of ``members`` clients, named
    ``<base>-for-<members>``.

    Scale, flooding, ``max_abs``, ring degree and the number of data primes stay ``base``'s, so the
    released values are the very ones ``base`` releases; only the headroom above the sum shrinks,
    and with it the bytes (a ciphertext's first half carries one residue per data prime and
    coefficient, packed to each prime's bits). The data modulus ``Q`` must keep a sum below
    ``Q / 2`` while one member's coefficient reaches ``sqrt(2) * max_abs * scale`` (see
    :func:`max_members`), so it needs ``log2(members) + log2(sqrt(2) * max_abs) +
    scale_bits + 1`` bits, counted on the primes SEAL picks below their nominal sizes; the bits are
    taken off ``base``'s data primes from the last one (see :func:`_shrink`). A key holder refuses a larger sum
    (:class:`~secagg.errors.HeadroomError`), so a federation that grows needs new keys.

    Raises:
        InvalidParametersError: ``base`` evaluates circuits (its depth is not 0 or it has
            evaluation keys), or its own modulus does not hold ``members``.
    """
    members = integer("members", members, minimum=1, error=InvalidParametersError)
    return _sized(get_preset(base), members)


def max_members(preset: Preset, max_weight: float = 1.0) -> int:
    """The largest number of members whose sum cannot wrap around the data modulus ``Q``: a
    coefficient of one client's plaintext is at most ``sqrt(2) * max_weight * max_abs * scale`` in
    absolute value (an average of slot values, each two reals ``x + iy``), and the sum must stay
    below ``Q / 2``. ``Q`` is the product of the primes SEAL chose (which lie below their nominal bit
    sizes) left at the bottom level, after a circuit's rescales."""
    primes = _data_primes(preset)
    log_q = sum(math.log2(q) for q in primes[:len(primes) - preset.depth])  # the bottom level, after every rescale
    per_member = math.log2(math.sqrt(2) * max_weight * preset.max_abs) + preset.scale_bits
    return int(2.0 ** (log_q - 1 - per_member) * (1 - 1e-12))  # a hair below: no member count on the edge


@functools.lru_cache(maxsize=256)
def _data_primes(preset: Preset) -> tuple[int, ...]:
    """The primes SEAL picks for ``preset``, the special (key-switching) one left out."""
    import tenseal.sealapi as sealapi  # here only: the rest of this module is plain data

    try:
        values = [int(m.value()) for m in sealapi.CoeffModulus.Create(preset.poly_modulus_degree,
                                                                       list(preset.coeff_modulus_bits))]
    except (RuntimeError, ValueError) as exc:  # e.g. too few primes of a size for this ring degree
        raise InvalidParametersError(f"preset {preset.name!r}: SEAL has no primes for it ({exc})") from None
    return tuple(values if len(values) == 1 else values[:-1])


def _shrink(bits: tuple[int, ...], by: int) -> tuple[int, ...]:
    """``bits`` with ``by`` bits taken off, from the last prime first, none below SEAL's 20.

    Whole primes are kept rather than evened out: SEAL compresses what it saves with zstd, residues
    with three or more zero bytes on top (a prime of 40 bits or fewer) slow that down markedly, and
    a client saves one plaintext per ciphertext."""
    out = list(bits)
    for i in reversed(range(len(out))):
        take = min(by, out[i] - 20)
        out[i] -= take
        by -= take
    return tuple(out)


@functools.lru_cache(maxsize=64)
def _sized(base: Preset, members: int) -> Preset:
    if base.depth or base.eval_keys:
        raise InvalidParametersError(f"preset {base.name!r} evaluates circuits; only additive presets (depth 0, no "
                                     "evaluation keys) can be sized for a number of members")
    bits = base.coeff_modulus_bits
    data, special = (bits, ()) if len(bits) == 1 else (bits[:-1], bits[-1:])
    per_member = math.log2(math.sqrt(2) * base.max_abs) + base.scale_bits
    least = math.ceil(1 + per_member + math.log2(members))  # bits a sum of members needs, before SEAL's primes
    for total in range(least, base.data_modulus_bits + 1):
        shrunk = _shrink(data, base.data_modulus_bits - total)
        if sum(shrunk) != total or any(wire_bits(b) != b for b in shrunk):
            continue  # a prime below 20 bits, or one that travels in more bits than a larger prime would
        try:
            candidate = replace(base, name=f"{base.name}-for-{members}", coeff_modulus_bits=shrunk + special)
            holds = max_members(candidate)
        except InvalidParametersError:  # too little nominal headroom, or no such primes: the next size up
            continue
        if candidate.depth == 0 and holds >= members:
            return replace(candidate, description=(
                f"{base.name}'s precision and flooding in {total} bits of data modulus: "
                f"{candidate.bytes_per_float32:.2f}x float32, sums of at most {holds} members"))
    raise InvalidParametersError(f"preset {base.name!r} holds sums of at most {max_members(base)} members; a sum of "
                                 f"{members} needs a preset with a larger modulus")


register_preset(Preset(
    name="compact",
    poly_modulus_degree=8192,
    coeff_modulus_bits=(60,),
    scale_bits=40,
    max_abs=4.0,
    flood_bits=12,
    description="additive, 1.9x float32; one 60-bit prime shared by precision, headroom and flooding",
))
register_preset(Preset(
    name="compact-lean",
    poly_modulus_degree=8192,
    coeff_modulus_bits=(48,),
    scale_bits=40,
    max_abs=4.0,
    flood_bits=12,
    description="compact's precision and flooding in one 48-bit prime: 1.5x float32, sums of at most 22 members",
))
register_preset(Preset(
    name="strict",
    poly_modulus_degree=8192,
    coeff_modulus_bits=(56, 56, 60),
    scale_bits=72,
    max_abs=4.0,
    flood_bits=40,
    description="additive (default), 3.5x float32; 2^40 noise flooding at 4.8e-8 x sqrt(clients) precision cost",
))
register_preset(Preset(
    name="strict-lean",
    poly_modulus_degree=8192,
    coeff_modulus_bits=(56, 24, 60),  # not 40 + 40: SEAL's zstd saves 40-bit residues slowly (see _shrink)
    scale_bits=72,
    max_abs=4.0,
    flood_bits=40,
    description="strict's precision and flooding in an 80-bit data modulus: 2.5x float32, sums of at most 22 members",
))
register_preset(Preset(
    name="deep",
    poly_modulus_degree=16384,
    coeff_modulus_bits=(60, 40, 40, 40, 40, 40, 40, 40, 60),
    scale_bits=40,
    max_abs=4.0,
    flood_bits=12,
    eval_keys=("relin", "galois"),
    description="server-side scoring: depth 7 for squared norms and a degree-7 exp polynomial",
))

DEFAULT_PRESET = "strict"
