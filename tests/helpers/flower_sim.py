"""A real Flower run in this process: Flower's run_simulation on Ray with a ServerApp running
SecAggFedAvg and a ClientApp running the example's training under secagg_mod, confined to a
temporary folder, with every message the server sends and every secfl log record kept. Imported by
tests that first ``pytest.importorskip("flwr")``."""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower"


def descendants(pid: int) -> list[str]:
    """Live descendants of ``pid`` from /proc (psutil is not a dependency)."""
    parent: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, rest = stat.rsplit(")", 1)
        fields = rest.split()
        if fields[0] == "Z":  # a zombie is already dead
            continue
        parent[int(entry)], names[int(entry)] = int(fields[1]), name.split("(", 1)[1]
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += [f"{c} {names[c]}" for c in kids]
        frontier += kids
    return out


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class RecordingGrid:
    """The real Grid, with every message the ServerApp sends kept for inspection."""

    def __init__(self, grid) -> None:
        self._grid, self.sent = grid, []

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.sent.extend(messages)
        return self._grid.send_and_receive(messages, timeout=timeout)

    def push_messages(self, messages):
        messages = list(messages)
        self.sent.extend(messages)
        return self._grid.push_messages(messages)


def example_task():
    sys.path.insert(0, str(EXAMPLE))
    try:
        return importlib.import_module("secfl_example.task")
    finally:
        sys.path.remove(str(EXAMPLE))


def apps(task, settings, *, locate, server_ctx: Path | None, nodes: int, rounds: int, partitions: int,
         plaintext_partition: int | None = None, locate_identity=None, locate_roster=None, key_holder_options=None,
         outer_mods=(), **strategy_options):
    """A ServerApp with SecAggFedAvg and a ClientApp running the example's training under secagg_mod.

    ``key_holder_options`` go to ``make_secagg_mod`` (its locators too); ``outer_mods`` run before it
    (a test's dropouts); ``server_ctx`` None leaves the key material to ``strategy_options`` (``epoch``)."""
    from flwr.app import Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    from fedattn.flower import SecAggFedAvg, enable_release, make_secagg_mod, sample_dp_from_state, save_sample_dp
    from fedattn.flower.records import to_numpy, to_record

    key_holder_options = key_holder_options or {}

    def train(msg, context):  # the example's train function, with `partitions` shards for the nodes
        pid = int(context.node_config["partition-id"]) % partitions
        cid = f"client-{pid}"
        dp = sample_dp_from_state(context, settings.dp_config(), client_id=cid) if settings.dp != "none" else None
        client = task.local_client(settings, partition_id=pid, num_partitions=partitions, sample_dp=dp)
        trained = task.local_train(client, to_numpy(msg.content["arrays"], what="global"), settings=settings,
                                   server_round=int(msg.content["config"]["server-round"]), partition_id=pid,
                                   seeded=True)  # a labelled, seeded simulation: compared with the standalone run
        metrics = {"num-examples": client.num_samples}
        if dp is not None:
            metrics["epsilon"] = save_sample_dp(context, dp, client_id=cid)
        return Message(RecordDict({"arrays": to_record(trained), "metrics": MetricRecord(metrics)}), reply_to=msg)

    def misconfigured(msg, context, call_next):  # one node runs without secagg_mod: plaintext reply
        if msg.metadata.message_type == "train" and int(context.node_config["partition-id"]) == plaintext_partition:
            return train(msg, context)
        return call_next(msg, context)

    client_app = ClientApp(mods=[*outer_mods, misconfigured, make_secagg_mod(locate_key=locate, locate_identity=locate_identity,
                                                                locate_roster=locate_roster, **key_holder_options)])
    client_app.train()(train)
    enable_release(client_app)  # registers the queries; secagg_mod (outermost) answers them
    server_app, box = ServerApp(), {}

    @server_app.main()
    def main(grid, context: Context) -> None:
        grid = box["grid"] = RecordingGrid(grid)
        strategy = box["strategy"] = SecAggFedAvg(public_context=server_ctx, seed=settings.seed, fraction_evaluate=0.0,
                                                  min_train_nodes=nodes, min_available_nodes=nodes, **strategy_options)
        box["result"] = strategy.start(grid=grid, initial_arrays=to_record(task.initial_state(settings)),
                                       num_rounds=rounds)

    return server_app, client_app, box


def simulate(base: Path, server_app, client_app, box: dict, *, nodes: int) -> dict:
    """Flower's in-process run_simulation on Ray, confined to ``base``; then Ray is shut down."""
    from flwr.simulation import run_simulation as flower_simulation

    # Ray's unix sockets must fit in 107 bytes; a deep pytest basetemp gets a short sibling instead
    ray_dir = base / "ray" if len(str(base)) <= 40 else Path(tempfile.mkdtemp(prefix="secfl-ray-"))
    outside = [Path("~/.flwr").expanduser(), Path(tempfile.gettempdir()) / "ray"]
    existed = {p: p.exists() for p in outside}
    before = set(descendants(os.getpid()))  # e.g. secagg's encryption workers from earlier tests: not Flower's
    handler = Records()
    logger = logging.getLogger("fedattn")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLWR_TELEMETRY_ENABLED", "0")
        mp.setenv("FLWR_HOME", str(base / "flwr-home"))
        mp.setenv("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        mp.setenv("PYTHONPATH", os.pathsep.join([str(EXAMPLE), os.environ.get("PYTHONPATH", "")]))  # Flower rewrites it
        for name in ("SECFL_CLIENT_KEY", "SECFL_CLIENT_IDENTITY", "SECFL_ROSTER"):
            mp.delenv(name, raising=False)
        (base / "ledgers").mkdir(exist_ok=True)
        mp.setenv("SECFL_LEDGER", str(base / "ledgers"))  # each node's ledger file in one folder
        mp.syspath_prepend(str(EXAMPLE))
        t0 = time.perf_counter()
        try:
            flower_simulation(server_app, client_app, num_supernodes=nodes, backend_config={
                "init_args": {"num_cpus": 2, "_temp_dir": str(ray_dir), "object_store_memory": 100 * 2**20},
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            })
        finally:
            import ray

            ray.shutdown()  # Flower's backend stops its actors but leaves Ray itself running
            logger.removeHandler(handler)
            logger.setLevel(level)
        seconds = time.perf_counter() - t0
    deadline = time.monotonic() + 20
    while (left := [p for p in descendants(os.getpid()) if p not in before]) and time.monotonic() < deadline:
        time.sleep(0.2)
    ray_sessions = sorted(p.name for p in ray_dir.glob("session_*"))
    if ray_dir.parent != base:
        shutil.rmtree(ray_dir, ignore_errors=True)
    created = [str(p) for p in outside if p.exists() and not existed[p]]
    return dict(box, records=handler.records, seconds=seconds, left=left, created=created, ray_sessions=ray_sessions)
