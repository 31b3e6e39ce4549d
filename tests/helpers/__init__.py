"""Helpers shared by the test suites (fixtures live in conftest.py)."""

import numpy as np

import secagg


def random_update(rng: np.random.Generator, magnitude: float = 0.05, shapes=None) -> dict[str, np.ndarray]:
    shapes = shapes or {"conv.weight": (8, 3, 3, 3), "conv.bias": (8,), "fc.weight": (10, 1200), "fc.bias": (10,)}
    return {n: rng.uniform(-magnitude, magnitude, s).astype(np.float32) for n, s in shapes.items()}


def released_tolerance(preset: secagg.Preset, n_clients: int, weight: float = 1.0) -> float:
    """8 sigma of the flooding noise (plus float32 rounding of the result)."""
    return 8 * 2.0**preset.flood_bits * preset.noise_std() * np.sqrt(n_clients) * weight + 1e-6
