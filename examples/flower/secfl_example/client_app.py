"""ClientApp: plain Flower training code; secagg_mod encrypts what it returns.

Mod order (outermost first): ``secagg_mod`` must come first so that every mod listed after it
(clipping, local DP) works on the plaintext reply before it is encrypted.
"""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedattn.flower import enable_release, sample_dp_from_state, save_sample_dp, secagg_mod
from fedattn.flower.records import to_numpy, to_record

from .task import Settings, local_client, local_train, seeded_simulation, show_secfl_logs

show_secfl_logs()
app = ClientApp(mods=[secagg_mod])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this node's partition; reply with the trained model."""
    # the run config (committed to by secagg_mod) sets the training; the node's own config its protection
    settings = Settings.from_run_config(context.run_config).with_client_dp(context.node_config)
    pid, parts = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    cid = f"client-{pid}"
    dp_config = settings.dp_config()
    sample_dp = sample_dp_from_state(context, dp_config, client_id=cid) if dp_config is not None else None
    client = local_client(settings, partition_id=pid, num_partitions=parts, sample_dp=sample_dp)
    global_state = to_numpy(msg.content["arrays"], what="the global model")
    trained = local_train(client, global_state, settings=settings, server_round=int(msg.content["config"]["server-round"]),
                          partition_id=pid, seeded=seeded_simulation(context.node_config))
    metrics = {"num-examples": client.num_samples}
    if sample_dp is not None:
        metrics["epsilon"] = save_sample_dp(context, sample_dp, client_id=cid)
    return Message(RecordDict({"arrays": to_record(trained), "metrics": MetricRecord(metrics)}), reply_to=msg)


enable_release(app)  # every node signs the round's contributor set; the one the set names releases it
