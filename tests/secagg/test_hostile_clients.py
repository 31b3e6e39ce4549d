"""What one enrolled client can still do to the aggregate without proofs of well-formedness, as
numbers: the key holder refuses any release beyond the range honest uploads can reach, so a
dishonest client moves a released average at most within [-max_abs, max_abs] per coordinate (4 in
every preset) and a released sum within +-members x max_abs; inside those boxes it can put them
anywhere (a negative weight included). docs/security.md states the same figures."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.attacker import forged_upload

import secagg

COMMIT = "ab" * 32
N = 20


def _round(keys, dishonest: dict, *, weights):
    """Honest a and b (updates of 0.01, the given weights) and dishonest v sending ``dishonest``."""
    ids, roster = secagg.generate_identities(["a", "b", "v"], group_size=3)
    ledgers = {c: secagg.MemoryLedger() for c in ids}
    honest = {"w": np.full(N, 0.01)}
    uploads = [secagg.Uploader(keys.secret, identity=ids[c], ledger=ledgers[c], roster=roster).upload(
        honest, run="r", round=0, commitment=COMMIT, weights=weights) for c in ("a", "b")]
    ledgers["v"].claim_round("r", 0, COMMIT)
    uploads.append(forged_upload(keys, ids["v"], dishonest, run="r", round=0, commitment=COMMIT))
    layout = secagg.Layout.of({"w": np.zeros(N)} | ({} if weights is None else {secagg.WEIGHTS_ENTRY: np.zeros(1)}))
    state = secagg.Aggregator(keys.public, roster=roster).open_round(run="r", round=0, layout=layout)
    for blob in uploads:
        state.receive(blob)
    cset = state.contributor_set(key_holder="a")
    sigs = {m: cset.sign(ids[m]) for m in cset.members}
    holder = secagg.KeyHolder(keys.secret, identity=ids["a"], roster=roster, ledger=ledgers["a"])
    return holder.release(state.request(cset, sigs)).values["w"]


def _ratio(numerator: float, weight: float) -> dict:
    return {"w": np.full(N, numerator), secagg.WEIGHTS_ENTRY: np.array([weight])}


def test_a_negative_weight_moves_the_average_only_within_the_update_range(compact_keys):
    # (0.01 + 0.01 + 1.9) / (1 + 1 - 1.5) = 3.84: inside [-4, 4], released - the most one client can do
    np.testing.assert_allclose(_round(compact_keys, _ratio(1.9, -1.5), weights=1.0), 3.84, atol=1e-3)
    # (0.02 + 3.0) / 0.5 = 6.04, each uploaded value within 4: amplified beyond any honest average
    with pytest.raises(secagg.ReleaseRefusedError, match="average"):
        _round(compact_keys, _ratio(3.0, -1.5), weights=1.0)
    # the review's amplification: a weight that almost cancels the others' (627x there)
    with pytest.raises(secagg.ReleaseRefusedError, match="average"):
        _round(compact_keys, _ratio(0.05, -1.99), weights=1.0)  # 0.07 / 0.01 = 7


def test_a_weight_beyond_the_range_is_refused(compact_keys):
    with pytest.raises(secagg.ReleaseRefusedError, match="total weight"):
        _round(compact_keys, _ratio(0.01, 2.5), weights=1.0)


def test_the_sum_moves_within_members_times_max_abs(compact_keys):
    out = _round(compact_keys, {"w": np.full(N, 4.0)}, weights=None)  # the largest value an honest upload holds
    np.testing.assert_allclose(out, 4.02, atol=1e-3)
    with pytest.raises(secagg.ReleaseRefusedError, match="sum"):  # 12.5 > 3 x 4
        _round(compact_keys, {"w": np.full(N, 12.5)}, weights=None)


def test_an_update_beyond_max_abs_is_refused_before_its_weight_scales_it(compact_keys):
    ids, _ = secagg.generate_identities(["a", "b"])
    uploader = secagg.Uploader(compact_keys.secret, identity=ids["a"])
    with pytest.raises(secagg.ValueOutOfRangeError, match="beyond 4"):
        uploader.upload({"w": np.full(3, 5.0)}, run="r", round=0, commitment=COMMIT, weights=0.5)
