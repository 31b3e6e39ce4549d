"""What every method of ``secfl bench`` implements: three roles, each timed step by step."""

from __future__ import annotations

import tempfile
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, ClassVar

import numpy as np

__all__ = ["Timer", "Method", "Update", "Payload", "PHASES", "ROLE_PHASES", "stream_request", "read_request"]

Update = dict[str, np.ndarray]
Payload = list[bytes]

PHASES = ("encrypt", "serialise", "deserialise", "aggregate", "decrypt", "release")
ROLE_PHASES = {"client": ("encrypt", "serialise"), "server": ("deserialise", "aggregate"),
               "key_holder": ("decrypt", "release")}


class Timer:
    """Accumulates wall time per step; ``with timer("encrypt"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0


class Method(ABC):
    """One way to aggregate client updates, split into roles (see the module docstring)."""

    name: ClassVar[str]
    label: ClassVar[str]
    #: module that must be importable, and how to get it
    requires: ClassVar[str | None] = None
    install_hint: ClassVar[str] = ""
    #: the payload names no client, so the server's cost is the same for replayed bytes
    reuse_payloads: ClassVar[bool] = False
    #: False where the server's aggregate is already the result (no key holder)
    has_key_holder: ClassVar[bool] = True

    def setup(self, *, shapes: dict[str, tuple[int, ...]], clients: int) -> None:
        """Keys, contexts, neighbour graphs: everything that is not part of one round (untimed)."""
        self.shapes = dict(shapes)

    @abstractmethod
    def client(self, update: Update, k: int, timer: Timer) -> Payload: ...

    @abstractmethod
    def server(self, payloads: list[Payload], timer: Timer) -> Any: ...

    def key_holder(self, aggregate: Any, timer: Timer) -> tuple[Update, Update | None]:
        """Returns (released result, raw result before release; None where no party holds it)."""
        return aggregate, aggregate

    def notes(self, params: int) -> str:
        """What a reader of the figures at ``params`` values should know."""
        return ""


def stream_request(state: Any, cset: Any, signatures: dict[str, str]) -> BinaryIO:
    """A secagg server's release request, streamed to a temporary file as a server sends it (never
    whole in memory: :meth:`secagg.RoundAggregate.write_request`); the key holder reads it back."""
    sink = tempfile.TemporaryFile()
    state.write_request(cset, signatures, sink)
    sink.flush()
    return sink


def read_request(aggregate: BinaryIO) -> bytes:
    """What a key holder receives: the request :func:`stream_request` wrote (readable again)."""
    aggregate.seek(0)
    return aggregate.read()
