"""What each party observes in a federated round: the inputs of an attack.

A privacy audit compares like with like by running one attack on each protection's view:

* plain FedAvg - the server sees every client's gradient or update (:func:`client_observations`);
* encrypted aggregation - the server sees only the released mean of all clients' observations,
  produced here with real CKKS ciphertexts through :mod:`secagg` (:func:`released_mean`);
* client-level DP - the released mean of clipped, noised observations (:func:`dp_noised_mean`).

A real training run's view needs no helper here: :func:`fedattn.simulation.run_simulation` returns
one :class:`fedattn.round.RoundView` per round (the model sent, every update under plain, the
released aggregate under CKKS).

Example:
    >>> import numpy as np, secagg
    >>> from fedattn.models import make_model
    >>> model = make_model("mlp", input_shape=(1, 8, 8), n_classes=10, seed=0)
    >>> x, y = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32), np.arange(4)
    >>> obs = client_observations(model, x, y, n_clients=4, batch_size=1)
    >>> mean = released_mean(obs, keys=secagg.generate_keys(preset="strict"), seed=0)
    >>> bool(np.allclose(mean["net.1.bias"], np.mean([o["net.1.bias"] for o in obs], 0), atol=1e-6))
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

import secagg
from fedattn.privacy import clip_update

from .inversion import InversionError, fedavg_update, gradient_of

__all__ = ["client_observations", "released_mean", "dp_noised_mean"]


def client_observations(model: nn.Module, x: np.ndarray, y: np.ndarray, *, n_clients: int, batch_size: int,
                        local_steps: int = 1, lr: float = 0.1) -> list[dict[str, np.ndarray]]:
    """Each client's upload for consecutive batches of ``(x, y)``: its gradient (one step) or its
    FedAvg update after ``local_steps`` full-batch SGD steps."""
    if n_clients * batch_size > len(x):
        raise InversionError(f"{n_clients} clients x batch {batch_size} need {n_clients * batch_size} examples, "
                             f"only {len(x)} given")
    out = []
    for k in range(n_clients):
        sl = slice(k * batch_size, (k + 1) * batch_size)
        if local_steps == 1:
            out.append(gradient_of(model, x[sl], y[sl]))
        else:
            out.append(fedavg_update(model, x[sl], y[sl], steps=local_steps, lr=lr))
    return out


def released_mean(observations: Sequence[dict[str, np.ndarray]], *, keys: secagg.KeySet,
                  seed: int | None = None) -> dict[str, np.ndarray]:
    """The mean the key holders release after encrypted aggregation (equal weights, ratio form).

    Every observation is encrypted by its own client, summed by the server with the public context
    only, and released by a key holder after every check, noise-flooded (:func:`secagg.local_round`).
    """
    out = secagg.local_round(keys, {f"client-{k}": o for k, o in enumerate(observations)}, weights=1.0,
                             min_contributors=1, group_size=len(observations), release_seed=seed)
    return {n: a.astype(np.float64) for n, a in out.values.items()}


def dp_noised_mean(observations: Sequence[dict[str, np.ndarray]], *, clip_norm: float, noise_multiplier: float,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The mean of observations clipped to ``clip_norm`` with Gaussian noise of std
    ``noise_multiplier * clip_norm`` on the sum (client-level DP, as :mod:`fedattn.privacy` does)."""
    if not (clip_norm > 0 and noise_multiplier >= 0):
        raise InversionError("clip_norm must be > 0 and noise_multiplier >= 0")
    total: dict[str, np.ndarray] = {}
    for o in observations:
        clipped, _ = clip_update({n: np.asarray(a, np.float64) for n, a in o.items()}, clip_norm)
        for n, a in clipped.items():
            total[n] = total.get(n, 0.0) + a
    k = len(observations)
    return {n: (t + rng.normal(0.0, noise_multiplier * clip_norm, t.shape)) / k for n, t in total.items()}
