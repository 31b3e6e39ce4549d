"""What a simulated run depends on, validated: :class:`SimulationConfig` and its scripted dropouts.

:mod:`fedattn.simulation` runs it; the parties (:mod:`fedattn.parties`) and the played round read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import secagg

from ._validation import non_negative_int, one_of, positive_float, positive_int, probability
from .defences import DEFAULT_DEFENCES, DEFENCES
from .errors import InvalidConfigError
from .privacy import DPConfig
from .training import OPTIMIZERS, Recipe

__all__ = ["SimulationConfig", "ScriptedDropout", "PROTECTIONS", "DROPOUT_STAGES"]

PROTECTIONS = ("plain", "ckks")
DROPOUT_STAGES = ("before_upload", "during_upload", "after_upload", "during_signing", "during_decryption")


@dataclass
class SimulationConfig:
    """Everything a run depends on (validated); see the module docstring for what reproduces."""

    dataset: str = "digits"
    model: str = "mlp"
    clients: int = 10
    rounds: int = 10
    clients_per_round: int | None = None
    partition: str = "dirichlet"
    alpha: float = 0.5
    local_epochs: int = 1
    lr: float = 0.1
    batch_size: int = 32
    optimizer: str = "sgd"
    momentum: float = 0.0
    aggregation: str = "fedatt"
    rule_options: dict[str, Any] = field(default_factory=dict)
    protection: str = "ckks"
    protocol: str = "client-scored"
    preset: str = secagg.DEFAULT_PRESET
    dropout: float = 0.0
    dropouts: list[Any] = field(default_factory=list)
    min_contributors: int = secagg.DEFAULT_MIN_CONTRIBUTORS
    group_size: int | None = None
    dp: DPConfig | None = None
    #: account epsilon after every round (shown per round), or only after the last (PRV costs ~0.3 s a client)
    epsilon_every_round: bool = True
    seed: int = 0
    torch_threads: int | None = 1
    #: "shared" (one key set, as NVIDIA FLARE) or "threshold" (each client's own key, a committee)
    keys: str = "shared"
    #: threshold keys: the committee (the first ``holders`` clients) and the members a release needs
    holders: int = 5
    threshold: int = 3
    #: what clients check about the model they are sent (see :mod:`fedattn.defences`)
    defences: tuple[str, ...] = DEFAULT_DEFENCES

    def __post_init__(self) -> None:
        for name in ("clients", "rounds", "local_epochs", "batch_size", "min_contributors"):
            positive_int(name, getattr(self, name))
        if self.group_size is not None:
            positive_int("group_size", self.group_size)
            if self.group_size < self.min_contributors:
                raise InvalidConfigError(f"group_size={self.group_size} is below min_contributors="
                                         f"{self.min_contributors}: key holders release whole groups of at least that many")
        if self.clients_per_round is not None:
            positive_int("clients_per_round", self.clients_per_round)
            if self.clients_per_round > self.clients:
                raise InvalidConfigError(f"clients_per_round={self.clients_per_round} exceeds clients={self.clients}")
        positive_float("lr", self.lr)
        probability("dropout", self.dropout)
        self.dropouts = [ScriptedDropout.parse(d) for d in self.dropouts]
        one_of("protection", self.protection, PROTECTIONS)
        one_of("optimizer", self.optimizer, OPTIMIZERS)
        if isinstance(self.dp, dict):
            self.dp = DPConfig(**self.dp)
        if self.dp is not None and self.dp.mode == "client":
            if self.aggregation != "fedavg" or not self.rule_options.get("equal_weights", False):
                raise InvalidConfigError(
                    "client-level DP is accounted for equal client weights: use aggregation='fedavg' with "
                    "rule_options={'equal_weights': True}"
                )
        secagg.get_preset(self.preset)
        self.defences = tuple(self.defences)
        for d in self.defences:
            one_of("defences", d, DEFENCES)
        if "provenance" in self.defences and self.protection != "ckks":
            raise InvalidConfigError("the provenance defence checks releases signed by key holders: it needs "
                                     "protection='ckks'")
        one_of("keys", self.keys, ("shared", "threshold"))
        if self.keys == "threshold":
            if self.protection != "ckks" or self.protocol != "client-scored":
                raise InvalidConfigError("threshold keys serve the encrypted client-scored protocol: use protection="
                                         "'ckks', protocol='client-scored'")
            if not 1 <= self.threshold <= self.holders <= self.clients:
                raise InvalidConfigError(f"threshold={self.threshold} of holders={self.holders} among clients="
                                         f"{self.clients}: need 1 <= threshold <= holders <= clients")
            if secagg.get_preset(self.preset).flood_bits < 40:
                raise InvalidConfigError(f"threshold keys need the strict preset's smudging, not {self.preset!r}")
        if self.protection == "ckks" and self.protocol == "server-scored" and (
                self.aggregation != "fedatt" or self.rule_options.get("score") != "l2_squared" or self.preset != "deep"):
            raise InvalidConfigError(
                "the server-scored protocol computes FedAtt with squared-L2 scores on the 'deep' preset: use "
                "aggregation='fedatt', rule_options={'score': 'l2_squared'}, preset='deep'"
            )

    @property
    def groups_of(self) -> int:
        """Enrolment group size: ``group_size``, else ``min_contributors``."""
        return self.group_size or self.min_contributors

    @property
    def recipe(self) -> Recipe:
        return Recipe(epochs=self.local_epochs, lr=self.lr, batch_size=self.batch_size, optimizer=self.optimizer,
                      momentum=self.momentum)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dp"] = asdict(self.dp) if self.dp is not None else None
        d["dropouts"] = [asdict(x) for x in self.dropouts]
        return d


@dataclass(frozen=True)
class ScriptedDropout:
    """Client ``client`` leaves in round ``round`` at ``stage``:

    * ``before_upload`` - it never sends;
    * ``during_upload`` - its upload arrives cut in half (rejected as malformed);
    * ``after_upload`` - its upload arrived, but it is gone before the contributor set is formed;
    * ``during_signing`` - asked to sign the round's contributor set, it vanishes;
    * ``during_decryption`` - chosen as the round's key holder, it vanishes.

    In the first three cases its enrolment group sits the round out and the others go on; in the
    last two the set can no longer be completed or released, and the round is aborted with the
    global model unchanged (the set names its members and its one key holder, and none signs a
    second set for the round).
    """

    round: int
    client: str
    stage: str

    @classmethod
    def parse(cls, raw: ScriptedDropout | dict[str, Any]) -> ScriptedDropout:
        if isinstance(raw, ScriptedDropout):
            return raw
        if not isinstance(raw, dict) or set(raw) != {"round", "client", "stage"}:
            raise InvalidConfigError(f"a scripted dropout is {{'round': int, 'client': str, 'stage': str}}, got {raw!r}")
        one_of("dropout stage", raw["stage"], DROPOUT_STAGES)
        non_negative_int("dropout round", raw["round"])
        return cls(raw["round"], str(raw["client"]), raw["stage"])
