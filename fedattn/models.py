"""Small models that train in seconds on CPU and work with Opacus (no BatchNorm)."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

import torch
from torch import nn

from .errors import InvalidConfigError

__all__ = ["MLP", "CNN", "LSTMLanguageModel", "TransformerLanguageModel", "MODELS", "make_model", "float_state", "load_float_state"]


class MLP(nn.Module):
    """Flatten -> Linear(hidden) -> ReLU -> Linear(classes)."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """Two 3x3 convolutions with GroupNorm (Opacus-compatible) and max-pooling, then a linear head."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, channels: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise InvalidConfigError(f"the CNN needs image input (channels, height, width), got shape {input_shape}; use the MLP")
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, channels[0], 3, padding=1), nn.GroupNorm(4, channels[0]), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], 3, padding=1), nn.GroupNorm(4, channels[1]), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(channels[1] * (h // 4) * (w // 4), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LSTMLanguageModel(nn.Module):
    """Next-word prediction: untied embedding -> Opacus' DPLSTM -> linear over the vocabulary.

    Takes windows of token ids (float, as every secfl dataset's inputs; ``n_classes`` is the
    vocabulary) and returns the next token's logits. Built from Opacus-compatible layers so that
    DP-SGD needs no change; the embedding is a plain lookup, so a client's update moves only the
    rows of the tokens it used (what :func:`attacks.text.tokens_from_update` reads).
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, embed: int = 32, hidden: int = 64) -> None:
        super().__init__()
        from opacus.layers import DPLSTM  # imported here: the image models do not need Opacus

        if len(input_shape) != 1:
            raise InvalidConfigError(f"the LSTM takes windows of token ids, shape (context,), got {input_shape}")
        self.embedding = nn.Embedding(n_classes, embed)
        self.lstm = DPLSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded(self.embedding(x.long()))

    def forward_embedded(self, e: torch.Tensor) -> torch.Tensor:
        """The logits from token embeddings ``(batch, context, embed)`` instead of ids (what a
        reconstruction attack optimises: :mod:`attacks.text_reconstruction`)."""
        out, _ = self.lstm(e)
        return self.head(out[:, -1])


class TransformerLanguageModel(nn.Module):
    """Next-word prediction with one pre-norm Transformer block built from Opacus' layers.

    Untied token embedding plus a learned position embedding (both ``nn.Embedding``, which Opacus
    clips per sample) -> LayerNorm -> ``DPMultiheadAttention`` (residual) -> LayerNorm -> a ReLU
    feed-forward layer (residual) -> LayerNorm -> linear over the vocabulary, read at the window's
    last position. No causal mask: the window is all context, the label is the token after it.
    Inputs are windows of token ids (float, as every secfl dataset's), ``n_classes`` the vocabulary.
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, embed: int = 32, heads: int = 4,
                 hidden: int = 64) -> None:
        super().__init__()
        from opacus.layers import DPMultiheadAttention  # imported here: the image models do not need Opacus

        if len(input_shape) != 1:
            raise InvalidConfigError(f"the Transformer takes windows of token ids, shape (context,), got {input_shape}")
        self.embedding = nn.Embedding(n_classes, embed)
        self.position = nn.Embedding(input_shape[0], embed)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(embed), nn.LayerNorm(embed), nn.LayerNorm(embed)
        self.attention = DPMultiheadAttention(embed, heads, batch_first=True)
        self.feed_forward = nn.Sequential(nn.Linear(embed, hidden), nn.ReLU(), nn.Linear(hidden, embed))
        self.head = nn.Linear(embed, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded(self.embedding(x.long()))

    def forward_embedded(self, e: torch.Tensor) -> torch.Tensor:
        """The logits from token embeddings ``(batch, context, embed)`` instead of ids."""
        positions = torch.arange(e.shape[1], device=e.device).expand(e.shape[0], -1)
        h = e + self.position(positions)
        q = self.norm1(h)
        h = h + self.attention(q, q, q, need_weights=False)[0]
        h = h + self.feed_forward(self.norm2(h))
        return self.head(self.norm3(h)[:, -1])


MODELS = {"mlp": MLP, "cnn": CNN, "lstm": LSTMLanguageModel, "transformer": TransformerLanguageModel}


def _user_factory(name: str) -> Callable[..., nn.Module]:
    """``package.module:factory`` imported: the factory is called as ``factory(input_shape, n_classes)``."""
    module_name, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise InvalidConfigError(f"model {name!r}: cannot import {module_name!r} ({exc}); is it on the Python "
                                 "path?") from None
    except AttributeError:
        raise InvalidConfigError(f"model {name!r}: {module_name!r} has no {attr!r}") from None
    if not callable(factory):
        raise InvalidConfigError(f"model {name!r}: {attr!r} is not callable")
    return factory


def make_model(name: str, *, input_shape: tuple[int, ...], n_classes: int, seed: int) -> nn.Module:
    """Build a model with weights initialised from ``seed``: a registered name (``mlp``, ``cnn``) or
    any ``package.module:factory`` that returns a ``torch.nn.Module`` from ``(input_shape, n_classes)``."""
    if ":" in name:
        cls: Callable[..., nn.Module] = _user_factory(name)
    else:
        try:
            cls = MODELS[name]
        except KeyError:
            raise InvalidConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}, or "
                                     "package.module:factory") from None
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = cls(tuple(input_shape), n_classes)
    finally:
        torch.random.set_rng_state(gen_state)
    if not isinstance(model, nn.Module):
        raise InvalidConfigError(f"model {name!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _unique_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's state, each tensor under its first name, and every second name (Opacus' DPLSTM
    registers its recurrent weights under two) -> that first name; one pass over the state."""
    first: dict[int, str] = {}
    state, aliases = {}, {}
    for key, value in model.state_dict(keep_vars=True).items():
        if id(value) in first:
            aliases[key] = first[id(value)]
        else:
            first[id(value)] = key
            state[key] = value.detach()
    return state, aliases


def float_state(model: nn.Module) -> dict:
    """The model's floating-point state (parameters and float buffers) as float32 numpy arrays,
    each tensor once (a second name of the same tensor is left out: it would be sent twice).

    Integer buffers (e.g. BatchNorm's step counters) are not averaged by any rule and stay local.
    """
    state, _ = _unique_state(model)
    return {k: v.cpu().numpy().astype("float32", copy=True) for k, v in state.items() if v.is_floating_point()}


def load_float_state(model: nn.Module, state: dict) -> None:
    own, aliases = _unique_state(model)
    merged = {**own, **{k: torch.as_tensor(v, dtype=own[k].dtype) for k, v in state.items()}}
    for alias, key in aliases.items():  # every name of a tensor gets the new value, never a stale one
        merged[alias] = merged[key]
    model.load_state_dict(merged)
