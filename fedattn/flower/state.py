"""Client state that outlives a round: the Opacus accountant in Flower's ``context.state``.

Flower rebuilds a ClientApp's objects for every message; only ``context.state`` (a RecordDict the
SuperNode keeps per run) survives between rounds. Sample-level DP composes only if each round's
DP-SGD continues the same accountant, so its history is stored there as JSON:
``(noise_multiplier, sample_rate, steps)`` per entry, no data and no key.

Example (inside a ClientApp train function)::

    dp = sample_dp_from_state(context, DPConfig(mode="sample"), client_id=cid)
    Client(cid, x, y, model_factory=..., config=cfg, sample_dp=dp).train(global_state, seed=seed)
    epsilon = save_sample_dp(context, dp, client_id=cid)
"""

from __future__ import annotations

import json

from flwr.app import ConfigRecord, Context

from ..errors import PrivacyConfigError
from ..privacy import DPConfig, SampleLevelDP

__all__ = ["DP_STATE", "sample_dp_from_state", "save_sample_dp"]

DP_STATE = "secfl-sample-dp"


def sample_dp_from_state(context: Context, config: DPConfig, *, client_id: str) -> SampleLevelDP:
    """A :class:`SampleLevelDP` that continues this node's accountant from earlier rounds."""
    if config.mode != "sample":
        raise PrivacyConfigError(f"sample_dp_from_state is for mode='sample', got {config.mode!r}")
    dp = SampleLevelDP(config)
    record = context.state.config_records.get(DP_STATE)
    if record is not None:
        if record.get("accountant") != config.accountant:
            raise PrivacyConfigError(
                f"this node's earlier rounds used the {record.get('accountant')!r} accountant, this round asks for "
                f"{config.accountant!r}; epsilon cannot compose across accountants"
            )
        dp.restore(client_id, json.loads(str(record["state"])))
    return dp


def save_sample_dp(context: Context, dp: SampleLevelDP, *, client_id: str) -> float:
    """Store the accountant's history in ``context.state``; return the client's epsilon so far."""
    epsilon = dp.epsilon(client_id)
    context.state[DP_STATE] = ConfigRecord({
        "accountant": dp.config.accountant,
        "state": json.dumps(dp.state(client_id)),  # Opacus' accountant state_dict: history and mechanism
        "epsilon": float(epsilon),
        "delta": float(dp.config.delta),
    })
    return epsilon
