"""ServerApp: SecAggFedAvg with the public context only; central evaluation of the global model."""

from __future__ import annotations

import json
import logging

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fedattn.flower import SecAggFedAvg, load_server_context, load_server_epoch, load_server_roster
from fedattn.flower.records import to_numpy, to_record

from .task import Settings, evaluate, initial_state, show_secfl_logs

show_secfl_logs()
app = ServerApp()
log = logging.getLogger("fedattn.example")  # shown by show_secfl_logs


def train_metrics(replies: list[RecordDict], weight_key: str) -> MetricRecord:
    """Flower's weighted means, except epsilon: the DP guarantee is the worst client's, as secfl train reports."""
    out = aggregate_metricrecords(replies, weight_key)
    eps = [r["epsilon"] for c in replies for r in c.metric_records.values() if "epsilon" in r]
    if eps:
        out["epsilon"] = max(eps)
    return out


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    # a shared key set (run config `server-context`) or threshold keys (`epoch`, from `secfl keys ceremony`);
    # a missing one stops the run here, before round 1
    keys = {"epoch": load_server_epoch(cfg)} if cfg.get("epoch") else {"public_context": load_server_context(cfg)}
    roster = load_server_roster(cfg)  # run config `roster`: required, every upload is signed
    settings = Settings.from_run_config(cfg)
    nodes = int(cfg.get("min-nodes", 3))
    strategy = SecAggFedAvg(
        **keys,
        protocol=str(cfg.get("protocol", "client-scored")),
        rule=str(cfg.get("aggregation", "fedatt")),
        rule_options=json.loads(str(cfg.get("rule-options", "{}"))),  # e.g. '{"max_samples": 600}' for fedavg
        seed=settings.seed,
        roster=roster,
        fraction_train=float(cfg.get("fraction-train", 1.0)),
        fraction_evaluate=0.0,  # evaluation is central (below): the server holds the test split
        min_train_nodes=nodes,
        min_available_nodes=nodes,
        train_metrics_aggr_fn=train_metrics,
    )

    def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        accuracy, loss = evaluate(settings, to_numpy(arrays, what="the global model"))
        return MetricRecord({"accuracy": accuracy, "loss": loss})

    result = strategy.start(grid=grid, initial_arrays=to_record(initial_state(settings)),
                            num_rounds=int(cfg.get("num-server-rounds", 3)), train_config=ConfigRecord(),
                            evaluate_fn=central_evaluate)
    for entry in strategy.history:
        log.info("round %d: %d contributors (%d signed receipts), %d rejected, released by node %s%s", entry.round,
                 len(entry.contributors), len(entry.receipts), len(entry.rejected), entry.key_holder,
                 f"; aborted: {entry.aborted}" if entry.aborted else "")
    log.info("final metrics: %s", result.evaluate_metrics_serverapp)
