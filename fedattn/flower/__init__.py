"""secfl's encrypted protocols on Flower (``pip install "secfl[flower]"``, Flower 1.42).

* :class:`SecAggFedAvg` - the server strategy: aggregates ciphertexts with the public context,
  has a key holder release the aggregate, applies the rule's server step.
* :data:`secagg_mod` / :func:`make_secagg_mod` - the client mod that encrypts a ClientApp's
  plaintext reply; list it first in ``mods`` so that clipping and DP mods run before it.
* :func:`enable_release` - lets a ClientApp's nodes sign the round's contributor set and release
  it as key holder or, with threshold keys (``SecAggFedAvg(epoch=...)``), give their partials as
  committee members (:mod:`fedattn.flower.committee`).
* every node is a party with its own ``client.key``, ``identity``, ``roster`` and ledger (node
  config); every upload is signed, every release verified against the roster
  (:class:`secagg.KeyHolder`).
* :func:`sample_dp_from_state` / :func:`save_sample_dp` - DP-SGD accountants that compose across
  rounds through Flower's ``context.state``.

What each party sees: ``docs/protocols.md`` (section "On Flower"); a runnable app:
``examples/flower/``.
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised where flwr is absent
    raise ImportError(
        'fedattn.flower needs Flower: install secfl with its flower extra, pip install "secfl[flower]" '
        '(flwr[simulation]>=1.42,<1.43)'
    ) from exc

from .errors import (
    FlowerAdapterError,
    LedgerError,
    MissingCiphertextError,
    MissingIdentityError,
    MissingKeyError,
    MissingPublicContextError,
    NotSecflMessageError,
    ReleaseRefusedError,
)
from .keys import (
    IDENTITY_CONFIG,
    IDENTITY_ENV,
    ROSTER_CONFIG,
    ROSTER_ENV,
    SECRET_KEY_CONFIG,
    SECRET_KEY_ENV,
    SERVER_CONTEXT_CONFIG,
    load_client_key,
    load_identity,
    load_roster,
    load_server_context,
    load_server_epoch,
    load_server_roster,
)
from .ledger import LEDGER_CONFIG, LEDGER_ENV, FileLedger, open_ledger
from .mod import enable_release, make_release_handler, make_secagg_mod, make_sign_handler, secagg_mod
from .state import sample_dp_from_state, save_sample_dp
from .strategy import RoundLog, SecAggFedAvg

__all__ = [
    "SecAggFedAvg", "RoundLog", "secagg_mod", "make_secagg_mod", "enable_release", "make_release_handler", "make_sign_handler",
    "sample_dp_from_state", "save_sample_dp", "load_client_key", "load_server_context", "SECRET_KEY_CONFIG",
    "SECRET_KEY_ENV", "SERVER_CONTEXT_CONFIG", "FlowerAdapterError", "MissingPublicContextError", "MissingKeyError",
    "MissingCiphertextError", "NotSecflMessageError", "ReleaseRefusedError", "MissingIdentityError",
    "IDENTITY_CONFIG", "IDENTITY_ENV", "ROSTER_CONFIG", "ROSTER_ENV", "load_identity",
    "load_roster", "load_server_roster", "load_server_epoch", "LEDGER_CONFIG", "LEDGER_ENV", "FileLedger", "open_ledger",
    "LedgerError",
]
