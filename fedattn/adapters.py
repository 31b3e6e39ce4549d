"""Federated fine-tuning through LoRA adapters: a language model pretrained on public text, frozen,
and small low-rank adapters that are the only thing clients train, encrypt and send.

The base is the LSTM language model of :mod:`fedattn.models` with 128 hidden units (twice the
default: a pretrained model is usually larger than one trained on-device from scratch), pretrained
centrally on the public topics of ``pydoc-topics`` (deterministic, once per process). Two model
factories start from it:

* ``lora_lstm`` (``secfl train --model fedattn.adapters:lora_lstm``): embedding and LSTM frozen,
  the output layer ``W`` replaced by ``W + B A`` (rank 4; ``B`` starts at zero, so round 0 is the
  pretrained model). The frozen weights are held outside the module's parameters and buffers, so
  the model's state - what secfl averages, encrypts and sends - is the adapter alone: 6,164
  numbers;
* ``pretrained_lstm``: the same pretrained model with every weight trainable - full fine-tuning,
  the baseline an adapter is compared with: 310,437 numbers.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from torch import nn

from .models import LSTMLanguageModel, float_state, load_float_state
from .text import CONTEXT, public_windows
from .training import Recipe, train_epochs

__all__ = ["LoRALinear", "LoRALSTM", "lora_lstm", "pretrained_lstm", "pretrained_lstm_state", "PRETRAIN_RECIPE",
           "RANK", "BASE_HIDDEN"]

RANK = 4
BASE_HIDDEN = 128
PRETRAIN_RECIPE = Recipe(epochs=5, lr=0.5)
_PRETRAIN_SEED = 0


@cache
def pretrained_lstm_state(n_classes: int) -> dict[str, np.ndarray]:
    """The LSTM language model trained on the public topics (the same in every process)."""
    x, y = public_windows()
    rng, threads = torch.random.get_rng_state(), torch.get_num_threads()
    try:
        torch.manual_seed(_PRETRAIN_SEED)
        torch.set_num_threads(1)  # one thread: the same weights bit for bit in every process (client or server)
        model = LSTMLanguageModel((CONTEXT,), n_classes, hidden=BASE_HIDDEN)
        train_epochs(model, x, y, recipe=PRETRAIN_RECIPE, seed=_PRETRAIN_SEED)
    finally:
        torch.random.set_rng_state(rng)  # the caller's seeded initialisation is not disturbed
        torch.set_num_threads(threads)
    return float_state(model)


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update: ``x W^T + b + (x A^T) B^T``."""

    def __init__(self, frozen: nn.Linear, rank: int) -> None:
        super().__init__()
        self._frozen = (frozen.weight.detach().clone(), frozen.bias.detach().clone())  # a tuple: not in the state
        self.a = nn.Linear(frozen.in_features, rank, bias=False)
        self.b = nn.Linear(rank, frozen.out_features, bias=False)
        nn.init.zeros_(self.b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self._frozen
        return nn.functional.linear(x, weight, bias) + self.b(self.a(x))


class LoRALSTM(nn.Module):
    """The pretrained LSTM language model, frozen, with a LoRA adapter on its output layer."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, rank: int = RANK) -> None:
        super().__init__()
        base = pretrained_lstm(input_shape, n_classes)
        for p in base.parameters():
            p.requires_grad_(False)
        self._frozen = (base.embedding, base.lstm)  # a tuple: neither trained nor sent
        self.head = LoRALinear(base.head, rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding, lstm = self._frozen
        out, _ = lstm(embedding(x.long()))
        return self.head(out[:, -1])


def lora_lstm(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Model factory for ``--model fedattn.adapters:lora_lstm``."""
    return LoRALSTM(input_shape, n_classes)


def pretrained_lstm(input_shape: tuple[int, ...], n_classes: int) -> LSTMLanguageModel:
    """Model factory for full fine-tuning (``--model fedattn.adapters:pretrained_lstm``): the
    pretrained base, every weight trainable and sent."""
    model = LSTMLanguageModel(input_shape, n_classes, hidden=BASE_HIDDEN)
    load_float_state(model, pretrained_lstm_state(n_classes))
    return model
