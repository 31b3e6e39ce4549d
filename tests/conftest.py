import numpy as np
import pytest
from hypothesis import settings

import secagg

# deterministic property tests: the same examples on every run and machine, no example database
settings.register_profile("secfl", derandomize=True, database=None)
settings.load_profile("secfl")


@pytest.fixture(scope="session")
def compact_keys() -> secagg.KeySet:
    return secagg.generate_keys(preset="compact")


@pytest.fixture(scope="session")
def strict_keys() -> secagg.KeySet:
    return secagg.generate_keys(preset="strict")


@pytest.fixture(scope="session", params=["compact", "strict"])
def keys(request, compact_keys, strict_keys) -> secagg.KeySet:
    return {"compact": compact_keys, "strict": strict_keys}[request.param]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def random_update(rng: np.random.Generator, magnitude: float = 0.05, shapes=None) -> dict[str, np.ndarray]:
    shapes = shapes or {"conv.weight": (8, 3, 3, 3), "conv.bias": (8,), "fc.weight": (10, 1200), "fc.bias": (10,)}
    return {n: rng.uniform(-magnitude, magnitude, s).astype(np.float32) for n, s in shapes.items()}


def released_tolerance(preset: secagg.Preset, n_clients: int, weight: float = 1.0) -> float:
    """8 sigma of the flooding noise (plus float32 rounding of the result)."""
    return 8 * 2.0**preset.flood_bits * preset.noise_std() * np.sqrt(n_clients) * weight + 1e-6
