"""One seed of the audit (every protection's run and attacks), and the summary over seeds."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats

import secagg
from fedattn.data import Dataset, load_dataset, partition
from fedattn.models import load_float_state, make_model
from fedattn.privacy import DPConfig
from fedattn.simulation import SimulationConfig, run_simulation

from . import audit_membership as am
from . import leakage
from . import membership as mia
from .dp_audit import audit_one_run, make_canaries
from .inversion import gradient_of
from .views import client_observations, released_mean

__all__ = ["one_seed", "summarise", "interval", "simulation_config", "headline_value", "epsilon_entry", "probe_label"]

#: the audit configuration (attacks.audit.AuditConfig), duck-typed: this module is imported by that one
AuditConfig = Any


def interval(values: Sequence[float | None], confidence: float = 0.95) -> dict[str, Any] | None:
    """Mean over seeds with a ``confidence`` t-interval (a single seed: no interval)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return None
    mean = float(v.mean())
    if v.size == 1:
        return {"mean": mean, "low": None, "high": None, "values": v.tolist(), "n": 1}
    half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return {"mean": mean, "low": mean - half, "high": mean + half, "values": v.tolist(), "n": int(v.size)}


def simulation_config(cfg: AuditConfig, protection: str, seed: int) -> SimulationConfig:
    common: dict[str, Any] = dict(dataset=cfg.dataset, model=cfg.model, clients=cfg.clients, rounds=cfg.rounds,
                                  local_epochs=cfg.local_epochs, lr=cfg.lr, partition=cfg.partition, alpha=cfg.alpha,
                                  preset=cfg.preset, seed=seed, epsilon_every_round=False)
    if protection == "plain":
        return SimulationConfig(**common, protection="plain", aggregation="fedavg")
    if protection == "ckks":
        return SimulationConfig(**common, protection="ckks", aggregation="fedatt")
    if protection == "ckks-threshold":
        holders = min(5, cfg.clients)
        return SimulationConfig(**common, protection="ckks", aggregation="fedatt", keys="threshold", holders=holders,
                                threshold=min(3, holders))
    if protection == "ckks+dpsgd":
        dp = DPConfig(mode="sample", noise_multiplier=cfg.dpsgd_noise_multiplier, clip_norm=cfg.dpsgd_clip_norm,
                      delta=cfg.dp_delta, accountant=cfg.dp_accountant)
        return SimulationConfig(**common, protection="ckks", aggregation="fedatt", dp=dp)
    dp = DPConfig(mode="client", noise_multiplier=cfg.dp_noise_multiplier, clip_norm=cfg.dp_clip_norm,
                  delta=cfg.dp_delta, accountant=cfg.dp_accountant)
    return SimulationConfig(**common, protection="ckks", aggregation="fedavg", rule_options={"equal_weights": True}, dp=dp)


def factory_for(cfg: AuditConfig, data: Dataset, seed: int) -> Callable[[], torch.nn.Module]:
    return lambda: make_model(cfg.model, input_shape=data.input_shape, n_classes=data.n_classes, seed=seed)


def shards_for(cfg: AuditConfig, data: Dataset, seed: int) -> dict[str, np.ndarray]:
    parts = partition(data.y_train, cfg.clients, scheme=cfg.partition, alpha=cfg.alpha, seed=seed, groups=data.groups)
    return {f"client-{k}": idx for k, idx in enumerate(parts)}


def federated_references(cfg: AuditConfig, protection: str, data: Dataset, fixed: tuple[np.ndarray, np.ndarray],
                         pool: tuple[np.ndarray, np.ndarray], seed: int) -> mia.ShadowModels:
    """Reference models: the protection's federated recipe (without encryption), each on the
    ``fixed`` examples plus a random half of the ``pool`` (every pool example IN for half of them):
    as many examples as the target had, so that their confidence is calibrated like the target's."""
    rng = np.random.default_rng(seed + 1)
    pool_x, pool_y = pool
    in_mask = mia.balanced_in_mask(cfg.shadow_models, len(pool_y), rng)
    recipe = dataclasses.replace(simulation_config(cfg, protection, seed), protection="plain", keys="shared")
    models = []
    for i, inside in enumerate(in_mask):
        shard = Dataset(f"{data.name}-reference-{i}", np.concatenate([fixed[0], pool_x[inside]]),
                        np.concatenate([fixed[1], pool_y[inside]]), pool_x[~inside], pool_y[~inside],
                        data.n_classes, data.input_shape, data.synthetic, f"reference {i} of {data.description}")
        sim = run_simulation(dataclasses.replace(recipe, seed=seed + 100 + i), dataset=shard)
        model = factory_for(cfg, data, seed)()
        load_float_state(model, sim.final_state)
        models.append(model)
    return mia.ShadowModels(models=models, in_mask=in_mask)


def probe_views(cfg: AuditConfig, protection: str, model: torch.nn.Module, x: np.ndarray, y: np.ndarray,
                keys: secagg.KeySet, seed: int) -> list[tuple[dict[str, np.ndarray], slice]]:
    """The probe round's views: (what the server sees, which probe examples are behind it)."""
    k = len(x)
    if protection == "plain":
        return [(gradient_of(model, x[i:i + 1], y[i:i + 1]), slice(i, i + 1)) for i in range(k)]
    obs = client_observations(model, x, y, n_clients=k, batch_size=1)
    rng = np.random.default_rng(seed + 7)
    if protection == "ckks+dp":
        from fedattn.privacy import ClientLevelDP

        dp = ClientLevelDP(DPConfig(mode="client", noise_multiplier=cfg.dp_noise_multiplier,
                                    clip_norm=cfg.dp_clip_norm, delta=cfg.dp_delta), n_clients=k)
        obs = [dp.privatise(o, sampled=k, rng=rng)[0] for o in obs]
    elif protection == "ckks+dpsgd":  # one DP-SGD step on one example: clipped, noised by sigma * C, times lr
        from fedattn.privacy import clip_update

        sigma = cfg.dpsgd_noise_multiplier * cfg.dpsgd_clip_norm
        obs = [{n: cfg.lr * (a + rng.normal(0, sigma, a.shape)) for n, a in clip_update(o, cfg.dpsgd_clip_norm)[0].items()}
               for o in obs]
    return [(released_mean(obs, keys=keys, seed=seed), slice(0, k))]


def canary_audit(cfg: AuditConfig, data: Dataset, keys: secagg.KeySet, seed: int) -> dict[str, Any]:
    """The one-run DP audit of the DP-SGD protection: its own run with canaries (attacks.dp_audit)."""
    rng = np.random.default_rng(seed + 31)
    canaries = make_canaries(data.x_test, data.y_test, m=cfg.canaries, n_classes=data.n_classes, rng=rng)
    accountant: dict[str, float] = {}

    def train(x_extra: np.ndarray, y_extra: np.ndarray) -> torch.nn.Module:
        with_canaries = dataclasses.replace(data, x_train=np.concatenate([data.x_train, x_extra]),
                                            y_train=np.concatenate([data.y_train, y_extra]))
        sim = run_simulation(simulation_config(cfg, "ckks+dpsgd", seed), dataset=with_canaries, keys=keys)
        accountant["epsilon"] = float(sim.epsilon() or 0.0)
        model = factory_for(cfg, data, seed)()
        load_float_state(model, sim.final_state)
        return model

    result = audit_one_run(train, canaries, delta=cfg.dp_delta, guesses=cfg.canary_guesses)
    return dataclasses.asdict(result) | {"epsilon_accountant": accountant["epsilon"],
                                         "method": "one run, canaries with random wrong labels, loss scores "
                                                   "(Steinke, Nasr, Jagielski 2023)"}



def _strip(obj: Any) -> Any:
    """JSON part of a result: keys starting with ``_`` (arrays for figures) left out."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not str(k).startswith("_")}
    return obj


def one_seed(cfg: AuditConfig, seed: int, keys: secagg.KeySet, say: Callable[[str], None]
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every protection's run and attacks for ``seed``: (JSON entries, figure arrays)."""
    data = load_dataset(cfg.dataset, seed=seed)
    factory, shards = factory_for(cfg, data, seed), shards_for(cfg, data, seed)
    table = len(data.input_shape) == 1
    rng = np.random.default_rng(seed)
    # the final model's audit pool: label-matched members and non-members; the other members are IN
    # for every reference model, as they were for the target
    keep_m, keep_n = mia.label_matched(data.y_train, data.y_test, np.random.default_rng(seed + 5))
    others = np.setdiff1d(np.arange(len(data.y_train)), keep_m)
    pool_x = np.concatenate([data.x_train[keep_m], data.x_test[keep_n]])
    pool_y = np.concatenate([data.y_train[keep_m], data.y_test[keep_n]])
    is_member = np.r_[np.ones(len(keep_m), bool), np.zeros(len(keep_n), bool)]
    probe_idx = rng.choice(len(data.x_train), size=cfg.probe_clients, replace=False)
    entries: dict[str, Any] = {}
    figures: dict[str, Any] = {"probe_originals": data.x_train[probe_idx], "probe": {}, "real_run": {}, "roc": {},
                               "accuracy": {}, "most_exposed": {}, "pool_x": pool_x}
    for protection in cfg.protections:
        say(f"{protection}: federated training")
        sim = run_simulation(simulation_config(cfg, protection, seed), dataset=data, keys=keys)
        entry = _training(sim, protection, cfg)
        figures["accuracy"][protection] = [r.accuracy for r in sim.rounds]
        views = list(sim.views)
        if "inversion" in cfg.attacks:
            say(f"{protection}: attacks on the run's views and the probe")
            if table:
                entry["real_run"] = leakage.tabular_leakage(views, factory=factory, x=data.x_train, y=data.y_train,
                                                            shards=shards, input_shape=data.input_shape, full=cfg.full)
            else:
                real = leakage.real_run_inversion(views, factory=factory, x=data.x_train, shards=shards,
                                                  input_shape=data.input_shape, full=cfg.full)
                figures["real_run"][protection] = real.pop("_examples")
                entry["real_run"] = real
            entry["probe"] = _probe(cfg, protection, factory, data, probe_idx, keys, seed, figures, table)
        if "membership" in cfg.attacks:
            say(f"{protection}: membership on each view ({cfg.shadow_models} reference models)")
            last = next((v for v in reversed(views) if v.aggregate is not None), None)
            member = am.view_membership(last, factory=factory, data=data, shards=shards, seed=seed) if last else {}
            refs = federated_references(cfg, protection, data, (data.x_train[others], data.y_train[others]),
                                        (pool_x, pool_y), seed)
            model = factory()
            load_float_state(model, sim.final_state)
            member["final_model"] = am.final_model_membership(model, refs, pool_x=pool_x, pool_y=pool_y,
                                                              is_member=is_member, seed=seed)
            figures["roc"][protection] = {k: v["_roc"] for k, v in member.items() if isinstance(v, dict) and "_roc" in v}
            figures["roc"][protection] |= {f"final model, {k}": v["_roc"] for k, v in member["final_model"].items()
                                           if isinstance(v, dict) and "_roc" in v}
            figures["most_exposed"][protection] = member["final_model"].get("_most_exposed", [])
            entry["membership"] = member
        if "dp-audit" in cfg.attacks and protection == "ckks+dpsgd":
            say(f"{protection}: one-run DP audit with {cfg.canaries} canaries")
            entry["dp_audit"] = canary_audit(cfg, data, keys, seed)
        entries[protection] = _strip(entry)
    return entries, figures


def _training(sim: Any, protection: str, cfg: AuditConfig) -> dict[str, Any]:
    rounds = sim.rounds
    per_client = [r.bytes_sent / max(1, len(r.participants)) for r in rounds]
    out: dict[str, Any] = {"accuracy": rounds[-1].accuracy, "accuracy_per_round": [r.accuracy for r in rounds],
                           "bytes_per_client_per_round": float(np.mean(per_client)),
                           "seconds_train": float(sum(r.seconds_train for r in rounds))}
    out["epsilon"] = epsilon_entry(sim, example="one training example")
    return out


def epsilon_entry(sim: Any, *, example: str) -> dict[str, Any] | None:
    """The run's DP claim (None: no DP claimed): ε for both relations, δ, the accountant, what one
    neighbouring dataset changes (``example`` under DP-SGD, a client's update under client-level DP)."""
    dp = sim.config.dp
    if dp is None:
        return None
    client = dp.mode == "client"
    unit = "one client's whole update" if client else example
    return {"add_remove": sim.epsilon(), "replace_one": sim.epsilon(relation="replace-one"), "delta": dp.delta,
            "accountant": dp.accountant, "relation": f"add or remove {unit}",
            "amplification": "none: the server sees who uploads" if client else
            "Poisson sampling inside each client (secret from the server)"}


def probe_label(protection: str, clients: int, unit: str) -> str:
    """What a probe's view is, for the report: whose gradients the server saw, a worst case."""
    return (("each client's gradient" if protection == "plain" else "the released mean of all probe clients' "
             "gradients") + f"; {clients} clients, one {unit} each, untrained model (worst case)")


def _probe(cfg: AuditConfig, protection: str, factory: Callable, data: Any, probe_idx: np.ndarray,
           keys: secagg.KeySet, seed: int, figures: dict[str, Any], table: bool) -> dict[str, Any]:
    model = factory()
    x, y = data.x_train[probe_idx], data.y_train[probe_idx]
    rows = []
    for observed, sl in probe_views(cfg, protection, model, x, y, keys, seed):
        if table:
            from .inversion import recover_labels

            labels = recover_labels(model, observed, batch_size=len(x[sl]), input_shape=data.input_shape)
            rows.append({"label_counts_right": float(np.mean(np.bincount(labels, minlength=data.n_classes)
                                                             == np.bincount(y[sl], minlength=data.n_classes)))})
        else:
            rows.append(leakage.probe_inversion(model, observed, x[sl], y[sl], input_shape=data.input_shape,
                                                iterations=cfg.inversion_iterations, seed=seed))
    if not table:
        figures["probe"][protection] = np.concatenate([r["_reconstructions"] for r in rows])
        figures.setdefault("probe_order", {})[protection] = np.concatenate([r["_originals"] for r in rows])
    keys_ = [k for k in rows[0] if not k.startswith("_")]
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in keys_}
    out["view"] = probe_label(protection, cfg.probe_clients, "example")
    return out


HEADLINES = {
    "accuracy": ("accuracy",),
    "bytes_per_client_per_round": ("bytes_per_client_per_round",),
    "reconstructed_share": ("real_run", "share_recovered"),
    "probe_share": ("probe", "share_ge_20db"),
    "attribute_accuracy": ("real_run", "attribute_accuracy"),
    "client_update_auc": ("membership", "client_update", "auc", "value"),
    "aggregate_auc": ("membership", "aggregate", "auc", "value"),
    "final_model_lira_auc": ("membership", "final_model", "lira_online", "auc", "value"),
    "final_model_rmia_auc": ("membership", "final_model", "rmia", "auc", "value"),
    "epsilon": ("epsilon", "add_remove"),
    "epsilon_replace_one": ("epsilon", "replace_one"),
    "epsilon_audited": ("dp_audit", "epsilon_lower_bound"),
}


def headline_value(entry: Any, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(entry, dict) or key not in entry or entry[key] is None:
            return None
        entry = entry[key]
    return float(entry) if isinstance(entry, (int, float)) else None


def summarise(per_seed: list[dict[str, Any]], cfg: AuditConfig, *, headlines: dict[str, tuple[str, ...]] = HEADLINES,
              changes: tuple[str, ...] = ("accuracy", "reconstructed_share", "probe_share", "aggregate_auc")
              ) -> dict[str, dict[str, Any]]:
    """Per protection, each of ``headlines`` over the seeds (:func:`attacks.audit.interval`), and the
    change of each of ``changes`` against ``plain`` where both exist."""
    out = {p: {name: interval([headline_value(s[p], path) for s in per_seed]) for name, path in headlines.items()}
           for p in cfg.protections}
    if "plain" in out:
        for protection, row in out.items():
            if protection != "plain":
                row["change_vs_plain"] = {name: None if (mine := row[name]) is None or (base := out["plain"][name]) is None
                                          else mine["mean"] - base["mean"] for name in changes}
    return out
