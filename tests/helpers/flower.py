"""Real Flower objects for the adapter's tests without a simulation engine: a node's Context, a
Message as a SuperNode delivers it, a small ClientApp, and a grid that hands the strategy's release
queries to ClientApps in this process. Imported by tests that first ``pytest.importorskip("flwr")``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedattn.flower import SecAggFedAvg, enable_release
from fedattn.flower import records as R

SHAPES = {"fc.weight": (4, 3), "fc.bias": (4,)}


def node_context(node: int = 7, *, run: int = 1, **node_config) -> Context:
    return Context(run_id=run, node_id=node, node_config={"partition-id": 0, **node_config}, state=RecordDict(),
                   run_config={})


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


def client_app(mods, key_path, step: float = 0.5, roster: Path | None = None,
               identity: Path | None = None) -> tuple[ClientApp, list]:
    """A plain ClientApp whose training moves every weight by ``step``; records its calls. Its
    nodes release with ``key_path``, ``roster`` and ``identity`` (None: not configured)."""
    calls = []
    app = ClientApp(mods=mods)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        calls.append(msg.metadata.message_id)
        trained = {n: a + step for n, a in R.to_numpy(msg.content["arrays"], what="global").items()}
        return Message(RecordDict({"arrays": R.to_record(trained), "metrics": MetricRecord({"num-examples": 10})}),
                       reply_to=msg)

    enable_release(app, locate_key=lambda ctx: key_path, locate_roster=lambda ctx: roster,
                   locate_identity=lambda ctx: identity)
    return app, calls


def reply_from(content: RecordDict, node: int) -> Message:
    return Message(content, reply_to=make_message(RecordDict(), node=node))


class LocalGrid:
    """Hands the strategy's release queries to ClientApps in this process, as a SuperNode would."""

    def __init__(self, nodes: dict[int, tuple[ClientApp, Context]]) -> None:
        self.nodes, self.asked = nodes, []

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        replies = []
        for m in messages:
            node = m.metadata.dst_node_id
            self.asked.append(node)
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
