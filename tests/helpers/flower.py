"""Real Flower objects for the adapter's tests without a simulation engine: a dealer's files, a node's
Context (its own key, identity, roster and ledger in its node config, as a SuperNode has them), a
Message as a SuperNode delivers it, a small ClientApp, and a grid that hands the strategy's queries
to ClientApps in this process. Imported by tests that first ``pytest.importorskip("flwr")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

import secagg
from fedattn.flower import SecAggFedAvg, enable_release, make_secagg_mod
from fedattn.flower import records as R

SHAPES = {"fc.weight": (4, 3), "fc.bias": (4,)}


@dataclass(frozen=True)
class Dealer:
    """What `secfl keys generate --clients N` writes: the key set, identities and roster."""

    folder: Path
    client_key: Path
    server_ctx: Path
    roster: Path


def deal(folder: Path, keys: secagg.KeySet, clients: int = 3, *, group_size: int | None = None) -> Dealer:
    paths = keys.save(folder)
    secagg.deal_identities((f"client-{i}" for i in range(clients)), folder, group_size=group_size or clients)
    return Dealer(folder, paths["client"], paths["server"], folder / "roster.json")


def node_context(node: int = 7, *, run: int = 1, run_config: dict | None = None, **node_config) -> Context:
    return Context(run_id=run, node_id=node, node_config={"partition-id": 0, **node_config}, state=RecordDict(),
                   run_config=dict(run_config or {}))


def party(dealer: Dealer, node: int, *, partition: int, ledgers: Path, run: int = 1, run_config: dict | None = None,
          **overrides) -> Context:
    """Node ``node`` playing client-<partition>: its own key material in its node config."""
    config = {"partition-id": partition, "secret-key": str(dealer.client_key), "identity": str(dealer.folder),
              "roster": str(dealer.roster), "secfl-ledger": str(ledgers), **overrides}
    return node_context(node, run=run, run_config=run_config, **{k: v for k, v in config.items() if v is not None})


def make_message(content: RecordDict, message_type: str = "train", node: int = 7, rnd: int = 1,
                 run: int = 1) -> Message:
    meta = Metadata(run_id=run, message_id=f"m{node}-{rnd}", src_node_id=0, dst_node_id=node, reply_to_message_id="",
                    group_id=str(rnd), created_at=0.0, ttl=3600.0, message_type=message_type)
    return Message(content, metadata=meta)


def zeros_model() -> dict[str, np.ndarray]:
    return {n: np.zeros(s, np.float32) for n, s in SHAPES.items()}


def train_message(strategy: SecAggFedAvg, *, rnd: int = 1, node: int = 7, run: int = 1,
                  model: dict[str, np.ndarray] | None = None) -> Message:
    config = strategy.secfl_config(ConfigRecord({R.CONFIG_ROUND: rnd}))
    arrays = R.to_record(zeros_model() if model is None else model)
    return make_message(RecordDict({"arrays": arrays, "config": config}), node=node, rnd=rnd, run=run)


def client_app(mods=None, step: float = 0.5, **release_options) -> tuple[ClientApp, list]:
    """A plain ClientApp whose training moves every weight by ``step``; records its calls. Its nodes
    find their key material in their node config (secagg_mod's and the handlers' defaults)."""
    calls = []
    app = ClientApp(mods=[make_secagg_mod()] if mods is None else mods)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        calls.append(msg.metadata.message_id)
        lr = float(context.run_config.get("lr", 1.0))  # a run-config value the app reads, as real apps do
        trained = {n: a + step * lr for n, a in R.to_numpy(msg.content["arrays"], what="global").items()}
        return Message(RecordDict({"arrays": R.to_record(trained), "metrics": MetricRecord({"num-examples": 10})}),
                       reply_to=msg)

    enable_release(app, **release_options)
    return app, calls


def reply_from(content: RecordDict, node: int) -> Message:
    return Message(content, reply_to=make_message(RecordDict(), node=node))


class LocalGrid:
    """Hands the strategy's queries to ClientApps in this process, as a SuperNode would."""

    def __init__(self, nodes: dict[int, tuple[ClientApp, Context]]) -> None:
        self.nodes, self.asked = nodes, []

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        replies = []
        for m in messages:
            node = m.metadata.dst_node_id
            self.asked.append((node, m.metadata.message_type))
            app, context = self.nodes[node]
            query = make_message(m.content, message_type=m.metadata.message_type, node=node, run=context.run_id)
            replies.append(app(query, context))
        return replies


@pytest.fixture
def server_process(monkeypatch):
    """Flower stamps a new message with the identity of the process that sends it (a ServerApp's)."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in [("_run_id", 1), ("_node_id", 0), ("_task_id", 0)]:
        monkeypatch.setattr(TaskIdentity, name, value, raising=False)
