"""The text audit's table for docs/text.md, generated from the report it describes.

    secfl audit --dataset pydoc-topics --out audit-text      # about 3½ minutes on 2 cores
    python examples/text/audit_table.py audit-text/report.json

Prints one Markdown row per protection: mean and 95% t-interval over the report's seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import fmt_interval

COLUMNS = {"perplexity": ("perplexity", 1), "bag-of-words precision": ("bag_of_words_precision", 3),
           "recall": ("bag_of_words_recall", 3), "canary exposure (bits, of 13.3)": ("canary_exposure", 2),
           "ROUGE-1 (probe)": ("rouge1", 3), "ROUGE-2 (probe)": ("rouge2", 3), "ε": ("epsilon", 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="report.json of a text audit")
    report = json.loads(parser.parse_args().report.read_text())
    if report["modality"] != "text":
        raise SystemExit(f"{report['config']['dataset']} is not a text audit")
    print("| protection | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for protection, s in report["summary"].items():
        cells = [fmt_interval(s[key]["values"], digits) if s.get(key) else "-" for key, digits in COLUMNS.values()]
        print(f"| {protection} | " + " | ".join(cells) + " |")
    chance = next(iter(report["summary"].values()))
    if chance.get("rouge1_chance"):  # the reconstruction probe ran
        print(f"\nChance (random public windows): ROUGE-1 {fmt_interval(chance['rouge1_chance']['values'], 3)}, "
              f"ROUGE-2 {fmt_interval(chance['rouge2_chance']['values'], 3)}.")
    print(f"\n{report['config']['clients']} clients, "
          f"{report['config']['rounds']} rounds, model {report['config']['model']}, seeds "
          f"{', '.join(map(str, report['seeds']))}; ε at δ = {report['config']['dp_delta']:g}; "
          f"{report['seconds']:.0f} s.")


if __name__ == "__main__":
    main()
