"""The privacy audit: train a federation under several protections, attack what the server really
sees under each, over several seeds, and report what leaks, with intervals, at what cost.

The threat model is data (as in breaching: a case is server + users + model + data): an
:class:`AuditConfig` fixes the dataset, the federation, the protections, the attacks and the
seeds; :func:`run_audit` returns an :class:`AuditReport` (plain data); :mod:`attacks.report`
renders it. What each row measures and how to read it: ``docs/audit.md``.

Protections (the server is honest but curious; see :mod:`attacks.leakage` and
:mod:`attacks.audit_membership` for the views attacked):

* ``plain`` - FedAvg, updates in the clear: the server sees every client's update;
* ``ckks`` - client-scored FedAtt on CKKS ciphertexts: the server sees each round's released aggregate;
* ``ckks-threshold`` - the same with threshold keys: each client's own key, a committee of 5 (3 release);
* ``ckks+dp`` - CKKS plus client-level DP (clipped updates, distributed Gaussian noise, equal weights);
* ``ckks+dpsgd`` - CKKS plus sample-level DP-SGD on every client (Opacus).

A text corpus (``dataset="pydoc-topics"``) gets the text audit instead (:mod:`attacks.text_audit`:
bag of words and canary exposure on the real run, sentence reconstruction as a probe, perplexity);
:meth:`AuditConfig.from_mapping` fills its defaults (a Transformer, natural partition, 2 rounds,
plain / ckks / ckks+dpsgd) where not given.

Per seed (training, data split, partition, attacks all follow it): one training run per
protection; the analytic attack on the run's own views in a sample of rounds (the headline); a
FedSGD probe on the untrained model, one example per client (a labelled worst case); membership on
each view with label-matched non-members; for DP-SGD a one-run DP audit with canaries. Headlines
are means over the seeds with 95 % t-intervals.

Example:
    >>> cfg = AuditConfig.from_mapping({"rounds": 1, "clients": 3, "quick": True, "protections": ["plain"],
    ...                                 "attacks": ["inversion"]})
    >>> cfg.effective().seeds, cfg.protections
    (1, ('plain',))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import secagg
from fedattn.data import load_dataset
from fedattn.errors import InvalidConfigError
from fedattn.privacy import DPConfig

from ._validation import count
from .audit_seed import interval, one_seed, summarise
from .text_audit import TEXT_ATTACKS, TEXT_DEFAULTS, check_text_config, run_text_jobs, summarise_text

__all__ = ["AuditConfig", "AuditReport", "run_audit", "PROTECTIONS", "ATTACKS", "interval"]
log = logging.getLogger(__name__)

PROTECTIONS = ("plain", "ckks", "ckks-threshold", "ckks+dp", "ckks+dpsgd")
ATTACKS = ("inversion", "membership", "dp-audit")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class AuditConfig:
    """Everything an audit depends on. Unknown keys are refused before anything runs."""

    dataset: str = "digits"
    model: str = "mlp"
    clients: int = 10
    rounds: int = 5
    local_epochs: int = 2
    lr: float = 0.1
    partition: str = "dirichlet"
    alpha: float = 0.5
    protections: tuple[str, ...] = PROTECTIONS
    attacks: tuple[str, ...] = ATTACKS
    preset: str = secagg.DEFAULT_PRESET
    dp_noise_multiplier: float = 0.5
    dp_clip_norm: float = 1.0
    dp_delta: float = 1e-5
    dp_accountant: str = "prv"
    dpsgd_noise_multiplier: float = 1.0
    dpsgd_clip_norm: float = 1.0
    probe_clients: int = 10
    inversion_iterations: int = 1000
    shadow_models: int = 4
    canaries: int = 200
    canary_guesses: int = 40
    seeds: int = 3
    seed: int = 0
    full: bool = False
    quick: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "protections", tuple(self.protections))
        object.__setattr__(self, "attacks", tuple(self.attacks))
        bad = [p for p in self.protections if p not in PROTECTIONS]
        if bad or not self.protections:
            raise InvalidConfigError(f"unknown protection(s) {', '.join(map(str, bad)) or '(none given)'}; choose one of: {', '.join(PROTECTIONS)}")
        text = load_dataset(self.dataset, seed=self.seed).groups is not None  # unknown names fail here too
        if text and self.model in ("mlp", "cnn"):
            raise InvalidConfigError(f"{self.dataset!r} is text: audit a language model (model = lstm or transformer)")
        known = TEXT_ATTACKS if text else ATTACKS
        bad = [a for a in self.attacks if a not in known]
        if bad:
            kind = "text" if text else "image and table"
            raise InvalidConfigError(f"unknown attack(s) {', '.join(map(str, bad))} for {kind} data; choose one of: "
                                     f"{', '.join(known)}")
        for name in ("clients", "rounds", "local_epochs", "inversion_iterations", "probe_clients", "seeds"):
            count(getattr(self, name), name, low=1, error=InvalidConfigError)
        if self.shadow_models < 4 or self.shadow_models % 2:
            raise InvalidConfigError(f"shadow_models must be an even number >= 4 (online LiRA needs IN and OUT "
                                     f"reference models for every example), got {self.shadow_models}")
        if not 2 <= self.canary_guesses <= self.canaries:
            raise InvalidConfigError("canary_guesses must lie in 2..canaries")
        DPConfig(mode="client", noise_multiplier=self.dp_noise_multiplier, clip_norm=self.dp_clip_norm,
                 delta=self.dp_delta, accountant=self.dp_accountant)
        DPConfig(mode="sample", noise_multiplier=self.dpsgd_noise_multiplier, clip_norm=self.dpsgd_clip_norm)
        secagg.get_preset(self.preset)
        if text:
            check_text_config(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AuditConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidConfigError(f"unknown audit option(s) {unknown}; valid options: {sorted(known)}")
        dataset = data.get("dataset", cls.dataset)
        if load_dataset(dataset).groups is not None:  # text: the text audit's defaults where not given
            data = {**TEXT_DEFAULTS, **data}
        return cls(**dict(data))

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> AuditConfig:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise InvalidConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidConfigError(f"config {path} is not valid TOML: {exc}") from None
        data = data.get("audit", data)
        return cls.from_mapping({**data, **{k: v for k, v in overrides.items() if v is not None}})

    def effective(self) -> AuditConfig:
        """The configuration actually run: ``quick`` is a one-seed smoke run of a smaller audit."""
        if not self.quick:
            return self
        return dataclasses.replace(self, seeds=1, rounds=min(self.rounds, 2), probe_clients=min(self.probe_clients, 4),
                                   inversion_iterations=min(self.inversion_iterations, 300),
                                   shadow_models=4, canaries=min(self.canaries, 100),
                                   canary_guesses=min(self.canary_guesses, 20))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class AuditReport:
    """The audit's results: ``to_dict`` is what ``report.json`` holds; ``figures`` the arrays the
    HTML report draws (first seed), never written to JSON."""

    config: dict[str, Any]
    config_hash: str
    seeds: tuple[int, ...]
    versions: dict[str, str]
    modality: str
    summary: dict[str, dict[str, Any]]
    per_seed: tuple[dict[str, Any], ...]
    notes: tuple[str, ...]
    seconds: float
    figures: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "config_hash": self.config_hash, "seeds": list(self.seeds),
                "versions": self.versions, "modality": self.modality, "summary": self.summary,
                "per_seed": list(self.per_seed), "notes": list(self.notes), "seconds": self.seconds}


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("secfl", "tenseal", "torch", "opacus", "numpy", "scikit-learn", "flwr"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_audit(config: AuditConfig, *, progress: Progress | None = None, workers: int | None = None) -> AuditReport:
    """Run the audit that ``config`` describes and return its report (nothing is written).

    ``workers``: processes for a text audit's runs (default: the CPUs); the image and table audits
    run in this process. Results do not depend on it. More than one starts processes by ``spawn``:
    a script that calls this must do so under ``if __name__ == "__main__":``.
    """
    t_start = time.perf_counter()
    cfg = config.effective()
    say = progress or (lambda message: log.info(message))
    torch.set_num_threads(1)
    keys = secagg.generate_keys(preset=cfg.preset)
    seeds = tuple(cfg.seed + i for i in range(cfg.seeds))
    if load_dataset(cfg.dataset, seed=cfg.seed).groups is not None:
        text_seeds, text_figures = run_text_jobs(cfg, seeds, keys, say, workers)
        return AuditReport(cfg.to_dict(), config.hash, seeds, _versions(), "text", summarise_text(text_seeds, cfg),
                           tuple(text_seeds), _text_notes(cfg), time.perf_counter() - t_start, text_figures)
    per_seed: list[dict[str, Any]] = []
    figures: dict[str, Any] = {}
    for i, seed in enumerate(seeds):
        def step(message: str, seed: int = seed, i: int = i) -> None:
            say(f"seed {seed} ({i + 1}/{len(seeds)}): {message}")

        entry, figs = one_seed(cfg, seed, keys, step)
        per_seed.append(entry)
        figures = figures or figs  # the first seed's arrays draw the figures
    modality = "image" if len(load_dataset(cfg.dataset, seed=cfg.seed).input_shape) > 1 else "table"
    return AuditReport(cfg.to_dict(), config.hash, seeds, _versions(), modality, summarise(per_seed, cfg),
                       tuple(per_seed), _notes(cfg), time.perf_counter() - t_start, figures)


def _notes(cfg: AuditConfig) -> tuple[str, ...]:
    notes = [f"{cfg.seeds} seed(s): every headline is a mean over them with a 95% t-interval"
             + (" - a smoke run (--quick), not an audit" if cfg.quick else ""),
             "the inversion headline attacks the run's own views in rounds "
             + ("every applied round" if cfg.full else "first, middle and last") + "; the probe is a worst case",
             "membership on the final model cannot separate plain from ckks: encryption does not change the model"]
    if "ckks+dp" in cfg.protections:
        notes.append("client-level DP is not audited empirically: a one-run audit would need hundreds of canary clients")
    return tuple(notes)


def _text_notes(cfg: AuditConfig) -> tuple[str, ...]:
    notes = [f"{cfg.seeds} seed(s): every headline is a mean over them with a 95% t-interval"
             + (" - a smoke run (--quick), not an audit" if cfg.quick else ""),
             "the natural partition is the same for every seed (whole topics dealt by size); the rules differ (plain: "
             "FedAvg; ckks, ckks-threshold, ckks+dpsgd: FedAtt; ckks+dp: equal-weight FedAvg), so perplexity "
             "differences are not the cost of encryption alone"]
    if "bag-of-words" in cfg.attacks:
        notes.append("bag of words: the first round's view of the real run, per client against the words it used")
    if "canary" in cfg.attacks:
        notes.append("canary exposure: the last round's model the server can form, the canary in one client's text "
                     "drawn by seed; chance is about 1.4 bits, the maximum 13.3")
    if "reconstruction" in cfg.attacks:
        notes.append("sentence reconstruction is a probe (one window per client, untrained model): a worst case, "
                     "not the run; read ROUGE against its chance floor")
    return tuple(notes)
