"""What a server can reconstruct: attacks on the real run's views, and a labelled worst-case probe.

**The real run** (:func:`real_run_inversion`): the audit's own training run, as the server saw it
(:class:`fedattn.round.RoundView`), in a stated sample of rounds. Under ``plain`` the server sees
each client's update (several local epochs over its whole shard); under encryption only the
released aggregate of a round (client-scored FedAtt: weights unknown to the server). The analytic
first-layer attack turns every neuron that one training example alone activated into that
example; a training image counts as **recovered** when some candidate of some attacked round
reaches 20 dB PSNR against it. The figure is the share of the distinct training images in the
attacked views so recovered.

**The probe** (:func:`probe_inversion`): a FedSGD round on the untrained model, one example per
client, equal weights - the worst case for the clients, never the run itself. Inverting Gradients
with the labels known runs its whole learning-rate schedule (no early stopping).

**Tables** (datasets whose inputs are feature vectors): no pictures and no PSNR. A candidate is
matched to the nearest record (standardised features); reported are the per-feature absolute
error of the matched records, the records recovered within 0.1 standard deviation on every
feature, and **attribute inference** of the sensitive column - the label, which in
``breast_cancer`` is the diagnosis (malignant or benign) and in ``credit`` the repayment outcome:
what a curious server most wants to learn about a patient or an applicant. The attacker predicts
it for every recovered record (with the model it sent) and is scored against a majority-class guess.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fedattn.models import load_float_state
from fedattn.round import RoundView

from .inversion import AttackerKnowledge, InversionError, analytic_first_layer, inverting_gradients
from .metrics import match_reconstructions

__all__ = ["sampled_rounds", "real_run_inversion", "probe_inversion", "recovered_images", "tabular_leakage",
           "THRESHOLD_DB"]

THRESHOLD_DB = 20.0


def sampled_rounds(views: Sequence[RoundView], *, full: bool) -> list[int]:
    """First, middle and last applied round (every applied round with ``full``)."""
    applied = [i for i, v in enumerate(views) if v.aggregate is not None]
    if full or len(applied) <= 3:
        return applied
    return sorted({applied[0], applied[len(applied) // 2], applied[-1]})


def recovered_images(candidates: np.ndarray, pool: np.ndarray, *, threshold_db: float = THRESHOLD_DB
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Which pool images some candidate matches at ``threshold_db`` or more (data range 1), and for
    each pool image the best candidate's index."""
    c = candidates.reshape(len(candidates), -1).astype(np.float64)
    p = pool.reshape(len(pool), -1).astype(np.float64)
    mse = ((p ** 2).sum(1)[:, None] - 2 * p @ c.T + (c ** 2).sum(1)[None, :]) / p.shape[1]
    best = np.argmin(mse, axis=1)
    psnr = 10 * np.log10(1.0 / np.maximum(mse[np.arange(len(p)), best], 1e-12))
    return psnr >= threshold_db, best


def _model_at(factory: Callable[[], nn.Module], state: Mapping[str, np.ndarray]) -> nn.Module:
    model = factory()
    load_float_state(model, dict(state))
    return model


def real_run_inversion(views: Sequence[RoundView], *, factory: Callable[[], nn.Module], x: np.ndarray,
                       shards: Mapping[str, np.ndarray], input_shape: tuple[int, ...], full: bool) -> dict[str, Any]:
    """The analytic attack on every view of the sampled rounds (module docstring)."""
    rounds = sampled_rounds(views, full=full)
    per_round, seen, recovered, examples = [], set(), set(), []
    for r in rounds:
        view = views[r]
        model = _model_at(factory, view.model_sent)
        if view.client_updates is not None:  # plain: each client's own update, against its own shard
            targets = [(u, shards[c]) for c, u in view.client_updates.items()]
            what = "each client's update"
        else:
            assert view.aggregate is not None
            members = np.concatenate([shards[c] for c in view.contributors])
            targets = [(view.aggregate, members)]
            what = "the released aggregate"
        found, total = 0, 0
        for observed, idx in targets:
            try:
                cands = analytic_first_layer(model, observed, input_shape=input_shape).reconstructions
            except InversionError:
                cands = np.zeros((0, *input_shape), np.float32)
            total += len(idx)
            seen.update(idx.tolist())
            if len(cands):
                hit, best = recovered_images(cands, x[idx])
                found += int(hit.sum())
                recovered.update(idx[hit].tolist())
                examples += [(x[idx][i], cands[best[i]]) for i in np.flatnonzero(hit)[:4]]
        per_round.append({"round": int(view.round), "view": what, "images": total, "recovered": found})
    return {"rounds_attacked": [int(views[r].round) for r in rounds], "attack": "analytic first layer",
            "images_in_views": len(seen), "recovered_ge_20db": len(recovered),
            "share_recovered": len(recovered) / len(seen) if seen else 0.0, "per_round": per_round,
            "_examples": examples[:8]}


def probe_inversion(model: nn.Module, observed: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray, *,
                    input_shape: tuple[int, ...], iterations: int, seed: int) -> dict[str, Any]:
    """Inverting Gradients (labels known, full schedule) and the analytic attack on one probe view."""
    ig = inverting_gradients(model, observed, knowledge=AttackerKnowledge(batch_size=len(x), labels=tuple(int(v) for v in y)),
                             input_shape=input_shape, iterations=iterations, patience=None, seed=seed)
    match = match_reconstructions(x, ig.reconstructions)
    try:
        analytic = analytic_first_layer(model, observed, input_shape=input_shape).reconstructions
        hit, _ = recovered_images(analytic, x)
        analytic_share = float(hit.mean())
    except InversionError:
        analytic_share = 0.0
    recs = np.stack([ig.reconstructions[j] for _, j in match.pairs])
    return {"share_ge_20db": match.fraction_above(THRESHOLD_DB), "median_psnr_db": float(np.median(match.psnr)),
            "analytic_share_ge_20db": analytic_share, "iterations": ig.iterations, "seconds": ig.seconds,
            "_originals": np.stack([x[i] for i, _ in match.pairs]), "_reconstructions": recs}


def tabular_leakage(views: Sequence[RoundView], *, factory: Callable[[], nn.Module], x: np.ndarray, y: np.ndarray,
                    shards: Mapping[str, np.ndarray], input_shape: tuple[int, ...], full: bool) -> dict[str, Any]:
    """Feature reconstruction and attribute inference (the label column) from the sampled views."""
    mu, sd = x.mean(0), x.std(0) + 1e-12
    errors, within, inferred, truth, records = [], 0, [], [], 0
    for r in sampled_rounds(views, full=full):
        view = views[r]
        model = _model_at(factory, view.model_sent)
        if view.client_updates is not None:
            targets = [(u, shards[c]) for c, u in view.client_updates.items()]
        else:
            assert view.aggregate is not None
            targets = [(view.aggregate, np.concatenate([shards[c] for c in view.contributors]))]
        for observed, idx in targets:
            records += len(idx)
            try:
                cands = analytic_first_layer(model, observed, input_shape=input_shape).reconstructions
            except InversionError:
                continue
            z_c, z_p = (cands.reshape(len(cands), -1) - mu) / sd, (x[idx] - mu) / sd
            dist = ((z_c[:, None, :] - z_p[None, :, :]) ** 2).mean(-1)
            nearest = np.argmin(dist, axis=1)
            err = np.abs(z_c - z_p[nearest])
            close = np.all(err <= 0.1, axis=1)
            within += len(set(nearest[close].tolist()))
            errors.append(err[close] if close.any() else np.zeros((0, x.shape[1])))
            with torch.no_grad():
                pred = model(torch.as_tensor(cands[close], dtype=torch.float32)).argmax(-1).numpy()
            inferred += pred.tolist()
            truth += y[idx][nearest[close]].tolist()
    majority = float(np.mean(y == np.bincount(y).argmax()))
    err_all = np.concatenate(errors) if errors else np.zeros((0, x.shape[1]))
    return {"records_in_views": records, "records_recovered": within,
            "share_recovered": within / records if records else 0.0,
            "median_feature_error_sd": float(np.median(err_all)) if err_all.size else None,
            "attribute": "the label column (diagnosis / repayment)",
            "attribute_accuracy": float(np.mean(np.array(inferred) == np.array(truth))) if truth else None,
            "attribute_baseline": majority, "attribute_records": len(truth)}
