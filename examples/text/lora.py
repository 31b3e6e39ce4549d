"""Federated fine-tuning through LoRA adapters against full fine-tuning, on pydoc-topics.

An LSTM language model is pretrained centrally on the public topics (fedattn.adapters); 10 clients
with whole private topics then fine-tune it, encrypted (CKKS, strict preset, FedAtt), 5 rounds, seeds
0-2, either through a rank-4 adapter on its output layer (the base frozen) or fully (every weight).
Reported: the pretrained model's test perplexity, each method's after 5 rounds (mean and 95%
t-interval over seeds), and the bytes each client uploads per round.

    python examples/text/lora.py --out text-lora.json    # about 4½ minutes on 2 cores
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


LORA, FULL = "fedattn.adapters:lora_lstm", "fedattn.adapters:pretrained_lstm"


def table(pretrained: float, runs: list[dict]) -> str:
    rows = ["| | numbers sent | bytes per client per round (CKKS) | test perplexity |", "|---|---|---|---|",
            f"| pretrained on the public topics | - | - | {pretrained:.2f} |"]
    full_bytes = next(r for r in runs if r["model"] == FULL)["bytes_per_client"]
    for name, model in (("LoRA adapters", LORA), ("full fine-tuning", FULL)):
        mine = [r for r in runs if r["model"] == model]
        share = f" ({mine[0]['bytes_per_client'] / full_bytes:.2%} of full)" if model == LORA else ""
        rows.append(f"| {name}, {ROUNDS} rounds, {len(mine)} seeds | {mine[0]['parameters']:,} | "
                    f"{mine[0]['bytes_per_client']:,.0f}{share} | {fmt_interval([r['perplexity'][-1] for r in mine], 2)} |")
    return "\n".join(rows)


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
    jobs = [(model, s, ROUNDS) for s in range(args.seeds) for model in (LORA, FULL)]
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(_run, *zip(*jobs)))
    pretrained = _pretrained()
    args.out.write_text(json.dumps({"pretrained_perplexity": pretrained, "runs": runs}, indent=1))
    print(table(pretrained, runs))


if __name__ == "__main__":
    main()
