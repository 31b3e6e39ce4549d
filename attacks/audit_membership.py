"""Membership inference for the audit: on what each protection shows the server, label-matched.

Three views, each with members and non-members from one distribution - every label equally often
on both sides (:func:`attacks.membership.label_matched`), as many as both sides allow:

* **each client's update** (``plain`` only; hidden by encryption): the server adds the update to
  the model it sent and runs the LOSS attack on the client's shard against test examples with the
  shard's labels;
* **the released aggregate** (every protection): the last round's step as the server applied it
  (loss change, :func:`attacks.membership.loss_change_attack`) on the contributors' examples;
* **the final model**: LOSS, online LiRA and RMIA with reference models trained by the same
  federated recipe (without encryption, which does not change a model beyond CKKS noise).
  Encryption does not change the final model either: this view cannot separate ``plain`` from
  ``ckks`` - only DP changes it.

TPR is reported only at false-positive rates ``f`` with at least ``10 / f`` non-members.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from torch import nn

from fedattn.data import Dataset
from fedattn.models import load_float_state
from fedattn.round import RoundView

from . import membership as mia
from .metrics import membership_metrics, roc_curve

__all__ = ["FPRS", "resolvable_fprs", "scored", "view_membership", "final_model_membership"]

FPRS = (0.1, 0.05, 0.01, 0.001)


def resolvable_fprs(n_nonmembers: int) -> tuple[float, ...]:
    return tuple(f for f in FPRS if n_nonmembers >= 10 / f)


def scored(scores: np.ndarray, is_member: np.ndarray, *, seed: int) -> dict[str, Any]:
    """AUC and TPR at the resolvable FPRs with bootstrap intervals, and the ROC curve."""
    fprs = resolvable_fprs(int((~is_member).sum()))
    m = membership_metrics(scores, is_member, fprs=fprs, seed=seed, n_bootstrap=500)
    curve = roc_curve(scores, is_member)
    return {"auc": dataclasses.asdict(m["auc"]),
            "tpr_at_fpr": {str(f): dataclasses.asdict(e) for f, e in m["tpr_at_fpr"].items()},
            "members": int(is_member.sum()), "nonmembers": int((~is_member).sum()),
            "_roc": (curve.fpr, curve.tpr)}


def _model(factory: Callable[[], nn.Module], state: Mapping[str, np.ndarray]) -> nn.Module:
    model = factory()
    load_float_state(model, dict(state))
    return model


def view_membership(view: RoundView, *, factory: Callable[[], nn.Module], data: Dataset,
                    shards: Mapping[str, np.ndarray], seed: int) -> dict[str, Any]:
    """The client-update view (plain) and the aggregate view (all), on the round ``view``."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    if view.client_updates is not None:
        scores, member = [], []
        for cid, update in view.client_updates.items():
            idx = shards[cid]
            keep_m, keep_n = mia.label_matched(data.y_train[idx], data.y_test, rng)
            local = _model(factory, {n: view.model_sent[n] + update[n] for n in view.model_sent})
            scores += [mia.loss_attack(local, data.x_train[idx][keep_m], data.y_train[idx][keep_m]),
                       mia.loss_attack(local, data.x_test[keep_n], data.y_test[keep_n])]
            member += [np.ones(len(keep_m), bool), np.zeros(len(keep_n), bool)]
        out["client_update"] = scored(np.concatenate(scores), np.concatenate(member), seed=seed) | {
            "view": "each client's update (visible under plain), LOSS on its local model"}
    idx = np.concatenate([shards[c] for c in view.contributors])
    keep_m, keep_n = mia.label_matched(data.y_train[idx], data.y_test, rng)
    before, after = _model(factory, view.model_sent), _model(factory, view.model_after)
    x = np.concatenate([data.x_train[idx][keep_m], data.x_test[keep_n]])
    y = np.concatenate([data.y_train[idx][keep_m], data.y_test[keep_n]])
    out["aggregate"] = scored(mia.loss_change_attack(before, after, x, y),
                              np.r_[np.ones(len(keep_m), bool), np.zeros(len(keep_n), bool)], seed=seed) | {
        "view": "the last round's aggregate as the server applied it (released, under encryption)"}
    return out


def final_model_membership(model: nn.Module, references: mia.ShadowModels, *, pool_x: np.ndarray,
                           pool_y: np.ndarray, is_member: np.ndarray, seed: int) -> dict[str, Any]:
    """LOSS, online LiRA and RMIA on the final model over the reference models' pool (label-matched
    members and non-members, :func:`attacks.audit_seed.one_seed`)."""
    members, others = np.flatnonzero(is_member), np.flatnonzero(~is_member)
    subset, labels = np.arange(len(pool_y)), is_member
    all_scores = {"loss": mia.loss_attack(model, pool_x, pool_y),
                  "lira_online": mia.lira(model, pool_x, pool_y, references, online=True, fixed_variance=True),
                  "rmia": mia.rmia(model, pool_x, pool_y, references, population=others)}
    out: dict[str, Any] = {name: scored(s[subset], labels, seed=seed) for name, s in all_scores.items()}
    out["note"] = ("the final model is the same with or without encryption (up to CKKS noise): this view separates "
                   "protections only through DP")
    top = members[np.argsort(-all_scores["rmia"][members])[:6]]
    out["_most_exposed"] = [(int(i), float(all_scores["rmia"][i])) for i in top]
    return out
