"""The privacy audit: train a federation under several protections, attack what the server sees
under each, and report what leaks, under which protection, at what cost.

The threat model is data (as in breaching: a case is server + users + model + data): an
:class:`AuditConfig` fixes the dataset, the federation, the protections, the attacks and the seed;
:func:`run_audit` returns an :class:`AuditReport` (plain data, JSON-serialisable);
:mod:`attacks.report` renders it. Attacks and their analysis are kept apart: this module only
orchestrates :mod:`fedattn` runs, :mod:`attacks.views`, :mod:`attacks.inversion`,
:mod:`attacks.membership` and :mod:`attacks.metrics`.

Protections:

* ``plain`` - FedAvg, updates in the clear: the server sees every client's update.
* ``ckks`` - client-scored FedAtt on CKKS ciphertexts: the server sees the released aggregate.
* ``ckks+dp`` - CKKS plus client-level DP (clipped updates, distributed Gaussian noise, equal
  weights): the server sees the released, noised aggregate.

What is attacked (the honest-but-curious server's view, BRIEF section 4):

* inversion - a FedSGD probe round on the initial (untrained) model, one example per client: the
  worst case for the clients. Under ``plain`` each client's gradient is attacked on its own; under
  ``ckks`` the released mean of all clients' gradients, produced with real ciphertexts; under
  ``ckks+dp`` the released mean of clipped, noised gradients. Attacks: analytic first-layer
  recovery, Inverting Gradients with labels known (the worst case) and with labels recovered. For
  the ``ckks`` view the number of clients is swept (PSNR vs clients).
* membership - the final global model: LOSS and LiRA (offline, fixed variance) on members (the
  clients' training data) vs non-members (the held-out test set); under ``plain`` also a client's
  visible update (its local model ``w + d``: LOSS on its own shard vs the test set); under every
  protection the last round's step, as the server applies it (the released aggregate under
  ``ckks``): how much it lowered each example's loss. LiRA assumes the attacker knows
  the training recipe: each shadow model is a whole federated training with the protection's
  rule and DP settings (without encryption, which does not change the model beyond CKKS noise) on
  a random half of the pool, every example IN for exactly half of the shadows.

Example:
    >>> cfg = AuditConfig.from_mapping({"rounds": 1, "clients": 3, "quick": True, "protections": ["plain"],
    ...                                 "attacks": ["inversion"]})
    >>> cfg.rounds, cfg.protections
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

import numpy as np
import torch

import secagg
from fedattn.data import Dataset, load_dataset, partition
from fedattn.errors import InvalidConfigError
from fedattn.models import load_float_state, make_model
from fedattn.privacy import DPConfig
from fedattn.round import RoundView
from fedattn.simulation import Client, SimulationConfig, run_simulation

from . import membership as mia
from ._validation import count
from .inversion import AttackerKnowledge, analytic_first_layer, inverting_gradients
from .metrics import (
    epsilon_lower_bound_clopper_pearson,
    identifiability,
    match_reconstructions,
    membership_metrics,
    roc_curve,
)
from .views import client_observations, released_mean

__all__ = ["AuditConfig", "AuditReport", "run_audit", "PROTECTIONS", "ATTACKS"]
log = logging.getLogger(__name__)

PROTECTIONS = ("plain", "ckks", "ckks+dp")
ATTACKS = ("inversion", "membership")


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
    inversion_clients: tuple[int, ...] = (10, 20, 50)
    inversion_iterations: int = 1500
    shadow_models: int = 8
    seed: int = 0
    quick: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "protections", tuple(self.protections))
        object.__setattr__(self, "attacks", tuple(self.attacks))
        object.__setattr__(self, "inversion_clients", tuple(int(k) for k in self.inversion_clients))
        bad = [p for p in self.protections if p not in PROTECTIONS]
        if bad or not self.protections:
            raise InvalidConfigError(f"unknown protection(s) {bad}; choose from {PROTECTIONS}")
        bad = [a for a in self.attacks if a not in ATTACKS]
        if bad:
            raise InvalidConfigError(f"unknown attack(s) {bad}; choose from {ATTACKS}")
        for name in ("clients", "rounds", "local_epochs", "inversion_iterations"):
            count(getattr(self, name), name, low=1, error=InvalidConfigError)
        if self.shadow_models < 4 or self.shadow_models % 2:
            raise InvalidConfigError(
                f"shadow_models must be an even number >= 4 (LiRA's pooled variance needs two OUT models for "
                f"some example), got {self.shadow_models}")
        if any(k < 1 for k in self.inversion_clients):
            raise InvalidConfigError("inversion_clients must be positive client counts")
        DPConfig(mode="client", noise_multiplier=self.dp_noise_multiplier, clip_norm=self.dp_clip_norm, delta=self.dp_delta)
        secagg.get_preset(self.preset)
        load_dataset(self.dataset, seed=self.seed)  # unknown names fail here, before any training

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AuditConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidConfigError(f"unknown audit option(s) {unknown}; valid options: {sorted(known)}")
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
        """The configuration actually run (``quick`` shrinks the expensive parts)."""
        if not self.quick:
            return self
        return dataclasses.replace(self, rounds=min(self.rounds, 2), inversion_clients=self.inversion_clients[:1],
                                   inversion_iterations=min(self.inversion_iterations, 500),
                                   shadow_models=min(self.shadow_models, 4))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


@dataclass
class AuditReport:
    """The audit's results as plain data (``to_dict`` is what ``report.json`` holds)."""

    config: dict[str, Any]
    config_hash: str
    seeds: dict[str, int]
    versions: dict[str, str]
    protections: dict[str, dict[str, Any]]
    seconds: float
    artefacts: dict[str, Any] = field(default_factory=dict, repr=False)  # arrays for the figures

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "config_hash": self.config_hash, "seeds": self.seeds,
                "versions": self.versions, "protections": self.protections, "seconds": self.seconds}


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("secfl", "tenseal", "torch", "opacus", "numpy", "scikit-learn", "flwr"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _simulation_config(cfg: AuditConfig, protection: str) -> SimulationConfig:
    common: dict[str, Any] = dict(dataset=cfg.dataset, model=cfg.model, clients=cfg.clients, rounds=cfg.rounds,
                  local_epochs=cfg.local_epochs, lr=cfg.lr, partition=cfg.partition, alpha=cfg.alpha,
                  preset=cfg.preset, seed=cfg.seed)
    if protection == "plain":
        return SimulationConfig(**common, protection="plain", aggregation="fedavg")
    if protection == "ckks":
        return SimulationConfig(**common, protection="ckks", aggregation="fedatt")
    dp = DPConfig(mode="client", noise_multiplier=cfg.dp_noise_multiplier, clip_norm=cfg.dp_clip_norm, delta=cfg.dp_delta)
    return SimulationConfig(**common, protection="ckks", aggregation="fedavg", rule_options={"equal_weights": True}, dp=dp)


Progress = Callable[[str], None]


def run_audit(config: AuditConfig, *, progress: Progress | None = None) -> AuditReport:
    """Run the audit that ``config`` describes and return its report (nothing is written)."""
    t_start = time.perf_counter()
    cfg = config.effective()
    say = progress or (lambda message: log.info(message))
    torch.set_num_threads(1)
    data = load_dataset(cfg.dataset, seed=cfg.seed)
    keys = secagg.generate_keys(preset=cfg.preset)
    results: dict[str, dict[str, Any]] = {}
    artefacts: dict[str, Any] = {"originals": None, "reconstructions": {}, "roc": {}, "accuracy": {}, "psnr_vs_clients": {}}
    pool_x = np.concatenate([data.x_train, data.x_test])
    pool_y = np.concatenate([data.y_train, data.y_test])
    is_member = np.r_[np.ones(len(data.x_train), bool), np.zeros(len(data.x_test), bool)]
    for protection in cfg.protections:
        say(f"{protection}: federated training ({cfg.rounds} rounds, {cfg.clients} clients)")
        sim, last = _observed_run(cfg, protection, data, keys)
        entry: dict[str, Any] = _training_summary(sim)
        artefacts["accuracy"][protection] = [r.accuracy for r in sim.rounds]
        if "inversion" in cfg.attacks:
            say(f"{protection}: gradient inversion on the server's view")
            entry["inversion"] = _inversion(cfg, protection, data, keys, artefacts)
        if "membership" in cfg.attacks:
            say(f"{protection}: training {cfg.shadow_models} federated shadow models")
            shadows = _federated_shadows(cfg, protection, data, pool_x, pool_y)
            say(f"{protection}: membership inference on the global model")
            model = _factory(cfg, data)()
            load_float_state(model, sim.final_state)
            entry["membership"] = _membership(cfg, model, pool_x, pool_y, is_member, shadows, protection, artefacts)
            if protection == "plain":
                entry["membership"]["client_update_loss"] = _client_update_membership(cfg, data, sim.final_state, artefacts)
            if last is not None:  # None only when no round was ever applied
                say(f"{protection}: membership inference on the last round's aggregate")
                entry["membership"]["aggregate_step_loss"] = _aggregate_step_membership(
                    cfg, data, last, pool_x, pool_y, is_member, protection, artefacts)
            else:
                log.warning("%s: no round was applied, so there is no aggregate to attack", protection)
        results[protection] = entry
    seeds = {"audit": cfg.seed, "partition": cfg.seed, "model_init": cfg.seed, "shadows": cfg.seed + 1, "inversion": cfg.seed}
    return AuditReport(cfg.to_dict(), config.hash, seeds, _versions(), results, time.perf_counter() - t_start, artefacts)


def _observed_run(cfg: AuditConfig, protection: str, data, keys) -> tuple[Any, RoundView | None]:
    """The protection's training run, and the server's view of the last round it applied."""
    sim = run_simulation(_simulation_config(cfg, protection), dataset=data, keys=keys)
    return sim, next((v for v in reversed(sim.views) if v.aggregate is not None), None)


def _federated_shadows(cfg: AuditConfig, protection: str, data, pool_x, pool_y) -> mia.ShadowModels:
    rng = np.random.default_rng(cfg.seed + 1)
    in_mask = mia.balanced_in_mask(cfg.shadow_models, len(pool_y), rng)
    recipe = dataclasses.replace(_simulation_config(cfg, protection), protection="plain")
    models = []
    for i, inside in enumerate(in_mask):
        shard = Dataset(f"{data.name}-shadow-{i}", pool_x[inside], pool_y[inside], pool_x[~inside], pool_y[~inside],
                        data.n_classes, data.input_shape, data.synthetic, f"shadow {i} of {data.description}")
        sim = run_simulation(dataclasses.replace(recipe, seed=cfg.seed + 100 + i), dataset=shard)
        model = _factory(cfg, data)()
        load_float_state(model, sim.final_state)
        models.append(model)
    return mia.ShadowModels(models=models, in_mask=in_mask)


def _factory(cfg: AuditConfig, data) -> Callable[[], torch.nn.Module]:
    return lambda: make_model(cfg.model, input_shape=data.input_shape, n_classes=data.n_classes, seed=cfg.seed)


def _training_summary(sim) -> dict[str, Any]:
    rounds = sim.rounds
    per_client = [r.bytes_sent / max(1, len(r.participants)) for r in rounds]
    return {
        "accuracy": rounds[-1].accuracy,
        "loss": rounds[-1].loss,
        "accuracy_per_round": [r.accuracy for r in rounds],
        "epsilon": rounds[-1].epsilon,
        "bytes_per_client_per_round": float(np.mean(per_client)),
        "seconds_encrypt": float(sum(r.seconds_encrypt for r in rounds)),
        "seconds_aggregate": float(sum(r.seconds_aggregate for r in rounds)),
        "seconds_decrypt": float(sum(r.seconds_decrypt for r in rounds)),
        "seconds_train": float(sum(r.seconds_train for r in rounds)),
    }


def _attack_rows(model, observed, x, idx, data, cfg, y) -> dict[str, dict[str, Any]]:
    shape = data.input_shape
    out = {}
    runs = {
        "analytic": analytic_first_layer(model, observed, input_shape=shape),
        "ig_labels_known": inverting_gradients(
            model, observed, knowledge=AttackerKnowledge(batch_size=len(idx), labels=tuple(int(v) for v in y)),
            input_shape=shape, iterations=cfg.inversion_iterations, patience=300, seed=cfg.seed),
        "ig_labels_recovered": inverting_gradients(
            model, observed, knowledge=AttackerKnowledge(batch_size=len(idx)), input_shape=shape,
            iterations=cfg.inversion_iterations, patience=300, seed=cfg.seed),
    }
    for name, result in runs.items():
        match = match_reconstructions(x, result.reconstructions)
        recs = np.stack([result.reconstructions[j] for _, j in match.pairs])
        out[name] = {
            "share_psnr_ge_20db": match.fraction_above(20.0),
            "median_psnr_db": float(np.median(match.psnr)),
            "mean_ssim": float(np.nanmean(match.ssim)),
            "identifiability": identifiability(recs, np.array([idx[i] for i, _ in match.pairs]), data.x_train),
            "seconds": result.seconds,
            "_reconstructions": recs,
        }
    return out


def _inversion(cfg: AuditConfig, protection: str, data, keys, artefacts) -> dict[str, Any]:
    model = _factory(cfg, data)()
    rng = np.random.default_rng(cfg.seed)
    k = cfg.clients
    idx = rng.choice(len(data.x_train), size=max(cfg.inversion_clients + (k,)), replace=False)
    x, y = data.x_train[idx[:k]], data.y_train[idx[:k]]
    obs = client_observations(model, x, y, n_clients=k, batch_size=1)
    if protection == "plain":
        rows: dict[str, list] = {}
        for i, o in enumerate(obs):  # the server attacks each visible update on its own
            for name, row in _attack_rows(model, o, x[i:i + 1], idx[i:i + 1], data, cfg, y[i:i + 1]).items():
                rows.setdefault(name, []).append(row)
        summary = {name: _mean_rows(r) for name, r in rows.items()}
        best = {name: np.concatenate([r["_reconstructions"] for r in rs]) for name, rs in rows.items()}
    else:
        if protection == "ckks+dp":
            obs = _privatise(obs, cfg)
        observed = released_mean(obs, keys=keys, seed=cfg.seed)
        summary = _attack_rows(model, observed, x, idx[:k], data, cfg, y)
        best = {name: row["_reconstructions"] for name, row in summary.items()}
    artefacts["originals"] = x
    artefacts["reconstructions"][protection] = best
    clean = {name: {k2: v for k2, v in r.items() if not k2.startswith("_")} for name, r in summary.items()}
    out = {"view": {"plain": "each client's gradient", "ckks": "released mean of all clients' gradients",
                    "ckks+dp": "released mean of clipped, noised gradients"}[protection],
           "clients_attacked": k, "examples_per_client": 1, "attacks": clean}
    if protection == "ckks":  # how leakage falls as more clients share the released mean
        sweep = {}
        for n in cfg.inversion_clients:
            xs, ys = data.x_train[idx[:n]], data.y_train[idx[:n]]
            mean = released_mean(client_observations(model, xs, ys, n_clients=n, batch_size=1), keys=keys, seed=cfg.seed)
            rows_n = _attack_rows(model, mean, xs, idx[:n], data, cfg, ys)
            sweep[str(n)] = {name: {k2: v for k2, v in r.items() if not k2.startswith("_")} for name, r in rows_n.items()}
        artefacts["psnr_vs_clients"] = sweep
        out["psnr_vs_clients"] = sweep
    return out


def _mean_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in rows[0] if not k.startswith("_")]
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in keys if k != "median_psnr_db"}
    out["median_psnr_db"] = float(np.median([r["median_psnr_db"] for r in rows]))
    out["_reconstructions"] = np.concatenate([r["_reconstructions"] for r in rows])
    return out


def _privatise(obs, cfg: AuditConfig):
    from fedattn.privacy import ClientLevelDP

    dp = ClientLevelDP(DPConfig(mode="client", noise_multiplier=cfg.dp_noise_multiplier, clip_norm=cfg.dp_clip_norm,
                                delta=cfg.dp_delta), n_clients=len(obs))
    rng = np.random.default_rng(cfg.seed + 7)
    return [dp.privatise(o, sampled=len(obs), rng=rng)[0] for o in obs]


def _membership(cfg, model, pool_x, pool_y, is_member, shadows, protection, artefacts) -> dict[str, Any]:
    scores = {"loss": mia.loss_attack(model, pool_x, pool_y),
              "lira_offline": mia.lira(model, pool_x, pool_y, shadows, online=False, fixed_variance=True)}
    out: dict[str, Any] = {name: _scored(cfg, s, is_member, protection, name, artefacts) for name, s in scores.items()}
    out["members"] = int(is_member.sum())
    out["nonmembers"] = int((~is_member).sum())
    return out


def _scored(cfg, scores, is_member, protection, name, artefacts) -> dict[str, Any]:
    m = membership_metrics(scores, is_member, seed=cfg.seed)
    curve = roc_curve(scores, is_member)
    artefacts["roc"].setdefault(protection, {})[name] = (curve.fpr, curve.tpr)
    return {"auc": dataclasses.asdict(m["auc"]),
            "tpr_at_fpr": {str(f): dataclasses.asdict(e) for f, e in m["tpr_at_fpr"].items()},
            "empirical_epsilon": _epsilon(scores, is_member, cfg)}


def _client_update_membership(cfg: AuditConfig, data, final_state, artefacts) -> dict[str, Any]:
    """Under plain FedAvg the server sees a client's update, hence its local model ``w + d``: LOSS
    attack on that model, members = the client's own shard, non-members = the test set."""
    shards = partition(data.y_train, cfg.clients, scheme=cfg.partition, alpha=cfg.alpha, seed=cfg.seed)
    idx = shards[0]
    client = Client("client-0", data.x_train[idx], data.y_train[idx], model_factory=_factory(cfg, data),
                    config=_simulation_config(cfg, "plain"))
    update = client.train(final_state, seed=cfg.seed + 23)
    local = _factory(cfg, data)()
    load_float_state(local, {n: final_state[n] + update[n] for n in final_state})
    x = np.concatenate([data.x_train[idx], data.x_test])
    y = np.concatenate([data.y_train[idx], data.y_test])
    is_member = np.r_[np.ones(len(idx), bool), np.zeros(len(data.x_test), bool)]
    out = _scored(cfg, mia.loss_attack(local, x, y), is_member, "plain", "client_update_loss", artefacts)
    out.update(members=int(len(idx)), nonmembers=int(len(data.x_test)),
               view="client-0's next update after training, visible to the server under plain FedAvg")
    return out


def _aggregate_step_membership(cfg: AuditConfig, data, view: RoundView, x, y, is_member, protection,
                               artefacts) -> dict[str, Any]:
    """The server's own view of the last round: the model it sent and the aggregate it applied.
    Members: every client's training examples (all clients take part in each round)."""
    before, after = _factory(cfg, data)(), _factory(cfg, data)()
    load_float_state(before, dict(view.model_sent))
    load_float_state(after, dict(view.model_after))
    out = _scored(cfg, mia.loss_change_attack(before, after, x, y), is_member, protection, "aggregate_step_loss",
                  artefacts)
    out.update(members=int(is_member.sum()), nonmembers=int((~is_member).sum()),
               view="the last round's aggregate as the server applied it: combined from the visible updates under "
                    "plain, the released (decrypted, noise-flooded) aggregate under ckks")
    return out


def _epsilon(scores: np.ndarray, is_member: np.ndarray, cfg: AuditConfig) -> dict[str, Any]:
    """Clopper-Pearson lower bound: threshold chosen at 1 % FPR on one half, counted on the other."""
    rng = np.random.default_rng(cfg.seed + 11)
    half = rng.random(len(scores)) < 0.5
    thr_scores, thr_member = scores[half], is_member[half]
    nonmember_scores = np.sort(thr_scores[~thr_member])
    threshold = nonmember_scores[int(np.ceil(0.99 * len(nonmember_scores))) - 1]
    test_s, test_m = scores[~half], is_member[~half]
    tp = int(np.sum(test_s[test_m] > threshold))
    fp = int(np.sum(test_s[~test_m] > threshold))
    est = epsilon_lower_bound_clopper_pearson(true_positives=tp, false_positives=fp, n_members=int(test_m.sum()),
                                              n_nonmembers=int((~test_m).sum()), delta=cfg.dp_delta)
    return {"lower_bound": est.value, "confidence": est.confidence, "delta": cfg.dp_delta,
            "true_positives": tp, "false_positives": fp, "threshold_fpr_target": 0.01}
