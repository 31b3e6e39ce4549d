"""A user-defined model, larger than the built-in ones, as a user would write it."""

from __future__ import annotations

import torch
from torch import nn


class WideCNN(nn.Module):
    """Three 3x3 convolutions (GroupNorm) and a two-layer head: ~50k parameters on 8x8 digits."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.GroupNorm(4, 32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.GroupNorm(8, 64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(32 * (h // 2) * (w // 2), 64), nn.ReLU(), nn.Linear(64, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def wide_cnn(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return WideCNN(input_shape, n_classes)


class BagOfWords(nn.Module):
    """A next-word model of one's own with no ``forward_embedded``: mean of the window's embeddings."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_classes, 16)
        self.head = nn.Linear(16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(x.long()).mean(1))


def bag_of_words(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return BagOfWords(input_shape, n_classes)
