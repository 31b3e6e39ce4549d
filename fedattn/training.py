"""Local training: the one SGD loop every model in secfl is trained with, with or without DP-SGD.

A client's local round (:class:`fedattn.simulation.Client`), a membership attack's target and
shadow models (:func:`attacks.membership.train_model`) all call :func:`train_epochs`. With DP, the
caller hands in ``make_private`` (Opacus' ``PrivacyEngine.make_private`` with the caller's
accountant); the loop then runs on Poisson-sampled batches and **steps on every batch, empty ones
included**, so that the accountant counts every sampled step (an empty batch still adds noise).

Example:
    >>> import numpy as np, torch
    >>> torch.manual_seed(0) and None
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> x, y = np.random.default_rng(0).random((8, 4), dtype=np.float32), np.array([0, 1] * 4)
    >>> trained = train_epochs(model, x, y, recipe=Recipe(epochs=2, lr=0.5, batch_size=4), seed=0)
    >>> trained is model
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ._validation import non_negative_float, one_of, positive_float, positive_int

__all__ = ["Recipe", "OPTIMIZERS", "train_epochs", "MakePrivate"]

OPTIMIZERS = ("sgd", "adam")

#: ``(module, optimizer, loader) -> (module, optimizer, loader)``: wraps one training for DP-SGD.
MakePrivate = Callable[[nn.Module, Any, Any], tuple[nn.Module, Any, Any]]


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How a model is trained locally (validated)."""

    epochs: int = 1
    lr: float = 0.1
    batch_size: int = 32
    optimizer: str = "sgd"
    momentum: float = 0.0

    def __post_init__(self) -> None:
        positive_int("epochs", self.epochs)
        positive_int("batch_size", self.batch_size)
        positive_float("lr", self.lr)
        one_of("optimizer", self.optimizer, OPTIMIZERS)
        non_negative_float("momentum", self.momentum)


def train_epochs(model: nn.Module, x: np.ndarray, y: np.ndarray, *, recipe: Recipe, seed: int,
                 make_private: MakePrivate | None = None) -> nn.Module:
    """Train ``model`` in place on ``(x, y)`` with cross-entropy; returns the module that was trained
    (``model`` itself, or Opacus' wrapper of it when ``make_private`` is given).

    Batches are shuffled by a generator seeded with ``seed``; everything else random (dropout
    layers, Opacus' noise when ``make_private`` seeds it) is the caller's to seed.
    """
    xs = torch.as_tensor(x, dtype=torch.float32)
    ys = torch.as_tensor(y, dtype=torch.long)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer: Any = (torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum) if recipe.optimizer == "sgd"
                      else torch.optim.Adam(params, lr=recipe.lr))
    loader: Any = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys),
                                              batch_size=min(recipe.batch_size, len(ys)), shuffle=True,
                                              generator=torch.Generator().manual_seed(seed))
    trained = model
    with warnings.catch_warnings():
        # seeded noise is deliberate in simulations; Opacus warns about it on every call, and about
        # the full backward hooks it installs on Sequential models
        warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
        warnings.filterwarnings("ignore", message=".*[Ff]ull backward hook.*")
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        if make_private is not None:
            trained, optimizer, loader = make_private(model, optimizer, loader)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for _ in range(recipe.epochs):
            for xb, yb in loader:
                optimizer.zero_grad()
                loss_fn(trained(xb), yb).backward()
                optimizer.step()  # an empty Poisson batch steps too: noise only, and the accountant counts it
    return trained
