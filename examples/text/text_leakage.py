"""What the server learns from text: each client's bag of words, and a canary's exposure.

pydoc-topics, LSTM, FedAtt, 10 clients with whole topics, 3 rounds, seeds 0-2, under three
protections: plain (the server sees every client's update), ckks (the released aggregate of the
round's 10 clients) and ckks+dp (the same with DP-SGD: sample-level, noise multiplier 1.0, clip 1.0).

* Bag of words, first round: the embedding rows that moved in what the server sees
  (attacks.text.tokens_from_update), scored per client against the tokens it used.
* Canary: client-0's text also holds the sentence "the private key is" + 4 tokens drawn from an
  alphabet of 10 words, 20 times; its exposure (attacks.text.exposure, 10^4 candidates, at most
  13.3 bits) under the model the server can form after the last round: w + client-0's update
  under plain, the new global model under ckks and ckks+dp.

    python examples/text/text_leakage.py --out text-leakage.json    # about 6 minutes on 2 cores

Prints a Markdown table (mean and 95% t-interval over seeds; bag-of-words scores are first
averaged over the 10 clients of a seed) and writes every figure to --out.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from common import fmt_interval

PROTECTIONS = ("plain", "ckks", "ckks+dp")
CLIENTS, ROUNDS, REPEATS = 10, 3, 20


def _canary(vocab: dict[str, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    prefix = np.array([vocab[w] for w in "the private key is".split()], np.int64)
    rng = np.random.default_rng(seed)
    alphabet = np.sort(rng.choice(np.arange(100, len(vocab)), size=10, replace=False))
    return prefix, rng.choice(alphabet, size=4), alphabet


def _run(protection: str, seed: int) -> dict:
    import torch

    from attacks.text import bag_of_words_scores, canary_windows, exposure, tokens_from_update, used_tokens
    from fedattn.data import load_dataset, partition
    from fedattn.models import load_float_state, make_model
    from fedattn.parties import Client
    from fedattn.privacy import DPConfig, SampleLevelDP
    from fedattn.simulation import SimulationConfig, run_simulation
    from fedattn.text import CONTEXT, vocabulary

    prefix, secret, alphabet = _canary(vocabulary(), seed)
    dp = DPConfig(mode="sample", noise_multiplier=1.0, clip_norm=1.0) if protection == "ckks+dp" else None
    config = SimulationConfig(dataset="pydoc-topics", model="lstm", partition="natural", clients=CLIENTS,
                              rounds=ROUNDS, protection="plain" if protection == "plain" else "ckks", seed=seed, dp=dp)
    data = load_dataset("pydoc-topics")

    def factory() -> torch.nn.Module:
        return make_model("lstm", input_shape=data.input_shape, n_classes=data.n_classes, seed=seed)

    sample_dp = SampleLevelDP(dp) if dp is not None else None
    shards = partition(data.y_train, CLIENTS, scheme="natural", groups=data.groups, seed=seed)
    xs = [data.x_train[idx] for idx in shards]
    ys = [data.y_train[idx] for idx in shards]
    cx, cy = canary_windows(prefix, secret, context=CONTEXT, repeats=REPEATS)
    xs[0], ys[0] = np.concatenate([xs[0], cx]), np.concatenate([ys[0], cy])
    clients = [Client(f"client-{i}", x, y, model_factory=factory, config=config, sample_dp=sample_dp)
               for i, (x, y) in enumerate(zip(xs, ys))]
    views = run_simulation(config, dataset=data, clients=clients).views
    first, last = views[0], views[-1]
    bags = []
    for i in range(CLIENTS):
        seen = first.client_updates[f"client-{i}"] if first.client_updates is not None else first.aggregate
        bags.append(bag_of_words_scores(tokens_from_update(seen, ignore=(0,)), used_tokens(xs[i], ignore=(0,))))
    if last.client_updates is not None:  # plain: the server forms client-0's own model
        formed = {n: last.model_sent[n] + last.client_updates["client-0"][n] for n in last.model_sent}
    else:
        formed = dict(last.model_after)
    model = factory()
    load_float_state(model, formed)
    return {"protection": protection, "seed": seed, "precision": [b[0] for b in bags], "recall": [b[1] for b in bags],
            "exposure": exposure(model, prefix, secret, alphabet, context=CONTEXT)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = [(p, s) for s in range(args.seeds) for p in PROTECTIONS]
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(_run, *zip(*jobs)))
    args.out.write_text(json.dumps(runs, indent=1))
    print("| what the server sees | bag-of-words precision | recall | canary exposure (bits, of 13.3) |")
    print("|---|---|---|---|")
    for p in PROTECTIONS:
        mine = [r for r in runs if r["protection"] == p]
        print(f"| {p} | {fmt_interval([float(np.mean(r['precision'])) for r in mine], 3)} | "
              f"{fmt_interval([float(np.mean(r['recall'])) for r in mine], 3)} | {fmt_interval([r['exposure'] for r in mine], 3)} |")


if __name__ == "__main__":
    main()
