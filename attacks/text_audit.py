"""The audit's text rows: one run per protection and seed, attacked on what the server sees.

For a text corpus (a dataset with natural groups, e.g. ``pydoc-topics``) the audit trains a
language model (``transformer`` by default) under each protection and measures, per seed:

* **perplexity** of the final global model on the held-out text (the rules differ - plain is
  FedAvg, the encrypted protections FedAtt - so a difference is not the cost of encryption alone);
* **bag of words** (real run, first round): the embedding rows that moved in what the server sees
  - each client's update under ``plain``, the released aggregate otherwise - scored per client
  against the tokens it used (:func:`attacks.text.tokens_from_update`);
* **canary exposure** (real run, last round): one client's text (drawn by seed) also holds a
  secret sentence ("the private key is" + 4 words from an alphabet of 10, 20 times); its exposure
  (:func:`attacks.text.exposure`, 10^4 candidates, at most 13.3 bits) under the model the server
  can form: ``w +`` that client's update under ``plain``, the new global model otherwise;
* **sentence reconstruction** (probe, a worst case): ``probe_clients`` clients each compute the
  gradient of one training window on the untrained model (FedSGD); the server sees each gradient
  under ``plain`` and their released mean otherwise (with the protection's DP, as the image probe);
  :func:`attacks.text_reconstruction.reconstruct_windows` and ROUGE-1/2 F1 against the windows,
  beside the chance floor of random public windows.

The natural partition deals whole topics by size, so it is the same for every seed; the seed
moves the initialisation, the training, the canary and its client, and the probe's windows.
Runs are independent, so they are spread over worker processes (results do not depend on how
many; each process draws its own CKKS keys).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

import numpy as np
import torch

import secagg
from fedattn.data import Dataset, load_dataset, partition
from fedattn.errors import InvalidConfigError
from fedattn.models import load_float_state, make_model
from fedattn.parties import Client
from fedattn.privacy import SampleLevelDP
from fedattn.simulation import run_simulation
from fedattn.text import public_windows, vocabulary

from .audit_seed import epsilon_entry, factory_for, probe_label, probe_views, shards_for, simulation_config, summarise
from .text import bag_of_words_scores, canary_windows, exposure, tokens_from_update, used_tokens
from .text_reconstruction import chance_rouge, reconstruct_windows, score_reconstruction

__all__ = ["TEXT_ATTACKS", "TEXT_DEFAULTS", "TEXT_HEADLINES", "check_text_config", "text_run", "run_text_jobs",
           "summarise_text"]

TEXT_ATTACKS = ("bag-of-words", "canary", "reconstruction")
#: what a text audit runs unless told otherwise (AuditConfig.from_mapping fills them for a text corpus)
TEXT_DEFAULTS: dict[str, Any] = {"model": "transformer", "partition": "natural", "rounds": 2, "local_epochs": 1,
                                 "protections": ("plain", "ckks", "ckks+dpsgd"), "attacks": TEXT_ATTACKS}
CANARY_PREFIX, CANARY_LENGTH, CANARY_ALPHABET, CANARY_REPEATS = "the private key is", 4, 10, 20
AuditConfig = Any  # attacks.audit.AuditConfig, duck-typed: that module imports this one


def check_text_config(cfg: AuditConfig) -> None:
    """Refuse, before any run starts, what would only fail inside a worker: a corpus other than the
    bundled one (the canary and the chance floor use its vocabulary), a model that does not build or
    cannot be reconstructed through, more clients than the partition can serve."""
    if cfg.dataset != "pydoc-topics":
        raise InvalidConfigError(f"the text audit runs on the bundled corpus pydoc-topics, not {cfg.dataset!r}")
    data = load_dataset(cfg.dataset, seed=cfg.seed)
    model = make_model(cfg.model, input_shape=data.input_shape, n_classes=data.n_classes, seed=cfg.seed)
    if "reconstruction" in cfg.attacks and not callable(getattr(model, "forward_embedded", None)):
        raise InvalidConfigError(f"model {cfg.model!r} has no forward_embedded (logits from token embeddings): the "
                                 "reconstruction attack needs it; drop that attack or use lstm or transformer")
    partition(data.y_train, cfg.clients, scheme=cfg.partition, alpha=cfg.alpha, seed=cfg.seed, groups=data.groups)


def _canary(seed: int, clients: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The canary's prefix, secret and alphabet, and the client whose text holds it (drawn by seed:
    the natural partition does not change with the seed, and its client-0 is the largest)."""
    vocab = vocabulary()
    prefix = np.array([vocab[w] for w in CANARY_PREFIX.split()], np.int64)
    rng = np.random.default_rng(seed + 41)
    alphabet = np.sort(rng.choice(np.arange(100, len(vocab)), size=CANARY_ALPHABET, replace=False))
    return prefix, rng.choice(alphabet, size=CANARY_LENGTH), alphabet, int(rng.integers(clients))


def _clients(cfg: AuditConfig, protection: str, data: Dataset, seed: int, canary: tuple[Any, ...]
             ) -> tuple[list[Client], list[np.ndarray]]:
    """The run's clients, the canary's client with the canary's windows added to its text."""
    config = simulation_config(cfg, protection, seed)
    factory = factory_for(cfg, data, seed)
    sample_dp = SampleLevelDP(config.dp) if config.dp is not None and config.dp.mode == "sample" else None
    xs, ys = [], []
    for k, idx in enumerate(shards_for(cfg, data, seed).values()):
        x, y = data.x_train[idx], data.y_train[idx]
        if k == canary[3]:
            cx, cy = canary_windows(canary[0], canary[1], context=data.input_shape[0], repeats=CANARY_REPEATS)
            x, y = np.concatenate([x, cx]), np.concatenate([y, cy])
        xs.append(x)
        ys.append(y)
    clients = [Client(f"client-{k}", x, y, model_factory=factory, config=config, sample_dp=sample_dp)
               for k, (x, y) in enumerate(zip(xs, ys))]
    return clients, xs


def _reconstruction(cfg: AuditConfig, protection: str, data: Dataset, keys: secagg.KeySet | None, seed: int
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    model = factory_for(cfg, data, seed)()
    context = data.input_shape[0]
    idx = np.random.default_rng(seed).choice(len(data.y_train), size=cfg.probe_clients, replace=False)
    x, y = data.x_train[idx], data.y_train[idx]
    originals = np.concatenate([x.astype(np.int64), y[:, None]], axis=1)
    scores, guesses = [], []
    for observed, sl in probe_views(cfg, protection, model, x, y, keys, seed):  # type: ignore[arg-type]
        if protection == "ckks+dpsgd":  # a DP-SGD step is lr times the noised gradient; the attacker knows lr
            observed = {n: a / cfg.lr for n, a in observed.items()}
        guess = reconstruct_windows(model, observed, batch_size=len(y[sl]), context=context, seed=seed)
        scores.append((score_reconstruction(guess, originals[sl]), len(y[sl])))
        guesses.append(guess)
    chance = chance_rouge(originals, public_windows()[0][:, 0].astype(np.int64), seed=seed)
    out: dict[str, Any] = {k: float(sum(s[k] * n for s, n in scores) / len(y)) for k in ("rouge1", "rouge2")}
    out |= {f"{k}_chance": v for k, v in chance.items()}
    out["view"] = probe_label(protection, cfg.probe_clients, "window")
    return out, {"originals": originals, "reconstructed": np.concatenate(guesses)}


def text_run(cfg: AuditConfig, protection: str, seed: int, keys: secagg.KeySet | None = None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """One protection's run for ``seed`` and its attacks: (JSON entry, figure arrays)."""
    torch.set_num_threads(1)
    if keys is None and protection != "plain":
        keys = secagg.generate_keys(preset=cfg.preset)
    data = load_dataset(cfg.dataset, seed=seed)
    canary = _canary(seed, cfg.clients)
    clients, xs = _clients(cfg, protection, data, seed, canary)
    sim = run_simulation(simulation_config(cfg, protection, seed), dataset=data, keys=keys, clients=clients)
    rounds = sim.rounds
    entry: dict[str, Any] = {
        "perplexity": math.exp(rounds[-1].loss), "perplexity_per_round": [math.exp(r.loss) for r in rounds],
        "bytes_per_client_per_round": float(np.mean([r.bytes_sent / max(1, len(r.participants)) for r in rounds])),
        "seconds_train": float(sum(r.seconds_train for r in rounds)),
        "epsilon": epsilon_entry(sim, example="one training window")}
    views = [v for v in sim.views if v.aggregate is not None or v.client_updates is not None]
    figures: dict[str, Any] = {"perplexity": entry["perplexity_per_round"]}
    if "bag-of-words" in cfg.attacks and views:
        first = views[0]
        pr = []
        for k, x in enumerate(xs):
            seen = first.client_updates[f"client-{k}"] if first.client_updates is not None else first.aggregate
            assert seen is not None  # views were filtered on it
            pr.append(bag_of_words_scores(tokens_from_update(seen, ignore=(0,)), used_tokens(x, ignore=(0,))))
        entry["bag_of_words"] = {"precision": float(np.mean([p for p, _ in pr])),
                                 "recall": float(np.mean([r for _, r in pr])), "round": first.round,
                                 "view": "each client's update" if first.client_updates is not None
                                 else "the released aggregate"}
    if "canary" in cfg.attacks and views:
        last, owner = views[-1], f"client-{canary[3]}"
        if last.client_updates is not None:  # plain: the server forms the canary's client's own model
            formed = {n: last.model_sent[n] + last.client_updates[owner][n] for n in last.model_sent}
        else:
            formed = dict(last.model_after)
        model = factory_for(cfg, data, seed)()
        load_float_state(model, formed)
        entry["canary"] = {"exposure": exposure(model, canary[0], canary[1], canary[2], context=data.input_shape[0]),
                           "max_exposure": CANARY_LENGTH * math.log2(CANARY_ALPHABET), "round": last.round,
                           "client": owner, "windows": int(len(xs[canary[3]])),
                           "model": f"w + {owner}'s update" if last.client_updates is not None else "the global model"}
    if "reconstruction" in cfg.attacks:
        entry["reconstruction"], figures["reconstruction"] = _reconstruction(cfg, protection, data, keys, seed)
    return entry, figures


def run_text_jobs(cfg: AuditConfig, seeds: tuple[int, ...], keys: secagg.KeySet, say: Callable[[str], None],
                  workers: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every (seed, protection) run, over ``workers`` processes (default: the CPUs, at most one per
    run; 1 runs them here): (per-seed entries, the first seed's figure arrays)."""
    jobs = [(seed, p) for seed in seeds for p in cfg.protections]
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    results: dict[tuple[int, str], tuple[dict[str, Any], dict[str, Any]]] = {}
    if workers == 1:
        for seed, p in jobs:
            say(f"seed {seed}: {p}: training and attacks")
            results[seed, p] = text_run(cfg, p, seed, keys)
    else:
        say(f"{len(jobs)} runs over {workers} processes")
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(text_run, cfg, p, seed): (seed, p) for seed, p in jobs}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    say(f"{len(results)}/{len(jobs)} runs done (seed {futures[future][0]}: {futures[future][1]})")
            except BaseException:
                pool.shutdown(cancel_futures=True)  # one run failed: the others would be thrown away anyway
                raise
    per_seed = [{p: results[seed, p][0] for p in cfg.protections} for seed in seeds]
    first = {p: results[seeds[0], p][1] for p in cfg.protections}
    return per_seed, {"text": first, "vocabulary": {i: w for w, i in vocabulary().items()}}


TEXT_HEADLINES = {
    "perplexity": ("perplexity",),
    "bytes_per_client_per_round": ("bytes_per_client_per_round",),
    "bag_of_words_precision": ("bag_of_words", "precision"),
    "bag_of_words_recall": ("bag_of_words", "recall"),
    "canary_exposure": ("canary", "exposure"),
    "rouge1": ("reconstruction", "rouge1"),
    "rouge2": ("reconstruction", "rouge2"),
    "rouge1_chance": ("reconstruction", "rouge1_chance"),
    "rouge2_chance": ("reconstruction", "rouge2_chance"),
    "epsilon": ("epsilon", "add_remove"),
}


def summarise_text(per_seed: list[dict[str, Any]], cfg: AuditConfig) -> dict[str, dict[str, Any]]:
    """Per protection, each text headline over the seeds, and its change against ``plain``."""
    return summarise(per_seed, cfg, headlines=TEXT_HEADLINES,
                     changes=("perplexity", "bag_of_words_recall", "canary_exposure", "rouge1", "rouge2"))
