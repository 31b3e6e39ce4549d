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
