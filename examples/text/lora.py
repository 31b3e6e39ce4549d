"""Federated fine-tuning through LoRA adapters against full fine-tuning, on pydoc-topics.

The LSTM language model is pretrained centrally on the public topics (fedattn.adapters), frozen,
and 10 clients with whole private topics train only a rank-4 adapter on its output layer, encrypted
(CKKS, strict preset, FedAtt), 5 rounds, seeds 0-2. Reported: the pretrained model's test
perplexity, the adapters' after 5 rounds (mean and 95% t-interval over seeds), and the bytes each
client uploads per round for the adapters against one encrypted round of the full model.

    python examples/text/lora.py --out text-lora.json    # about 4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import fmt_interval

CLIENTS, ROUNDS = 10, 5


def _run(model: str, seed: int, rounds: int) -> dict:
    from fedattn.simulation import SimulationConfig, run_simulation

    result = run_simulation(SimulationConfig(dataset="pydoc-topics", model=model, partition="natural", clients=CLIENTS,
                                             rounds=rounds, protection="ckks", seed=seed))
    first = result.rounds[0]
    return {"model": model, "seed": seed, "perplexity": [math.exp(r.loss) for r in result.rounds],
            "bytes_per_client": first.bytes_sent / len(first.participants),
            "parameters": int(sum(a.size for a in result.final_state.values()))}


def _pretrained() -> float:
    import torch

    from fedattn.adapters import lora_lstm
    from fedattn.data import load_dataset

    data = load_dataset("pydoc-topics")
    model = lora_lstm(data.input_shape, data.n_classes)  # B = 0: exactly the pretrained model
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(torch.as_tensor(data.x_test)), torch.as_tensor(data.y_test))
    return math.exp(float(loss))


def table(pretrained: float, runs: list[dict]) -> str:
    lora = "fedattn.adapters:lora_lstm"
    final = [r["perplexity"][-1] for r in runs if r["model"] == lora]
    adapter = next(r for r in runs if r["model"] == lora)
    full = next(r for r in runs if r["model"] == "lstm")
    return "\n".join([
        "| | numbers sent | bytes per client per round (CKKS) | test perplexity |", "|---|---|---|---|",
        f"| pretrained on the public topics | - | - | {pretrained:.2f} |",
        f"| LoRA adapters, {ROUNDS} rounds, {len(final)} seeds | {adapter['parameters']:,} | "
        f"{adapter['bytes_per_client']:,.0f} ({adapter['bytes_per_client'] / full['bytes_per_client']:.2%} of full) | "
        f"{fmt_interval(final, 2)} |",
        f"| full model (one round, for its size) | {full['parameters']:,} | {full['bytes_per_client']:,.0f} | - |"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--table-only", action="store_true", help="print the table of the runs already in --out")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.table_only:
        saved = json.loads(args.out.read_text())
        print(table(saved["pretrained_perplexity"], saved["runs"]))
        return
    jobs = [("fedattn.adapters:lora_lstm", s, ROUNDS) for s in range(args.seeds)] + [("lstm", 0, 1)]
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(_run, *zip(*jobs)))
    pretrained = _pretrained()
    args.out.write_text(json.dumps({"pretrained_perplexity": pretrained, "runs": runs}, indent=1))
    print(table(pretrained, runs))


if __name__ == "__main__":
    main()
