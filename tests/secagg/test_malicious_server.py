"""A malicious server against the key holders: each attack succeeds with one defence switched off
(tests/helpers/attacker.py) and fails with it on. The server holds every upload's bytes, the public
seeds in their signed headers, the roster and the public context; it may send any bytes."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import released_tolerance
from helpers.attacker import (
    ChunkMapKeyHolder,
    ForgetfulLedger,
    RawCheckKeyHolder,
    TrustingKeyHolder,
    coefficients_of,
    constant,
    key_from_decryption,
    scaled,
    secret_coefficients,
    shift,
    signed_round,
    to_ntt,
)

import secagg
from secagg.ring import Ring
from secagg.unsafe import decrypt_raw

REFUSED = (secagg.ReleaseRefusedError, secagg.EmptyAggregationError)


def _federation(names, *, group_size=None, forgetful=False):
    identities, roster = secagg.generate_identities(names, group_size=group_size or len(names))
    ledgers = {c: ForgetfulLedger() if forgetful else secagg.MemoryLedger() for c in names}
    return identities, roster, ledgers


def _holder(cls, keys, identities, roster, ledgers, cid, **options):
    return cls(keys.secret, identity=identities[cid], roster=roster, ledger=ledgers[cid], release_seed=None, **options)


def _updates(n_values, names, magnitude, seed=0):
    rng = np.random.default_rng(seed)
    return {c: {"w": rng.uniform(-magnitude, magnitude, n_values)} for c in names}


# ---- the key: (0, c) and the amplified upload ----------------------------------------------------
@pytest.mark.parametrize("preset, factor", [("compact", 2**22), ("strict", 2**50)])
def test_a_zero_c_request_gives_the_key_only_to_a_server_that_supplies_the_second_half(
        preset, factor, compact_keys, strict_keys):
    """The server asks for ``(0, c)``: its decryption is ``c*s``, and the release, re-encoded and
    divided by ``c``, is the secret key. Flooding does not help: ``c`` outgrows it."""
    keys = {"compact": compact_keys, "strict": strict_keys}[preset]
    ring = Ring(keys.secret.preset)
    ids, roster, ledgers = _federation(["a", "v"])
    rnd = signed_round(keys, ids, roster, ledgers, _updates(ring.n, ids, 1e-3), key_holder="a")
    truth = secret_coefficients(ring, keys.secret)

    trusting = _holder(TrustingKeyHolder, keys, ids, roster, ledgers, "a")
    trusting.halves = [to_ntt(ring, constant(ring, factor))]  # second halves are in NTT form
    out = trusting.release(rnd.request([ring.zeros()]))
    guess = np.array([round(int(x) / factor) for x in coefficients_of(ring, out.values["w"])])
    assert np.count_nonzero(guess != truth) == 0  # every one of the 8,192 coefficients

    ledgers["a"] = secagg.MemoryLedger()  # a fresh key holder; the server tries the same request
    rnd = signed_round(keys, ids, roster, ledgers, _updates(ring.n, ids, 1e-3), key_holder="a", run="again")
    with pytest.raises(REFUSED):  # it decrypts (0, sum of a) = sum of (m + e - c0): noise to the server
        _holder(secagg.KeyHolder, keys, ids, roster, ledgers, "a").release(rnd.request([ring.zeros()]))


def test_an_amplified_genuine_upload_gives_the_key_only_to_a_trusting_key_holder(compact_keys):
    """The server scales v's genuine ciphertext by 2^21: the release, divided by 2^21, is v's exact
    decryption polynomial ``m + e``, and ``(m + e - c0) / a`` is the secret key."""
    keys, factor = compact_keys, 2**21
    ring = Ring(keys.secret.preset)
    ids, roster, ledgers = _federation(["a", "v"])
    rnd = signed_round(keys, ids, roster, ledgers, _updates(ring.n, ids, 1e-6), key_holder="a")
    trusting = _holder(TrustingKeyHolder, keys, ids, roster, ledgers, "a")
    trusting.halves = [scaled(ring, rnd.a["v"][0], factor)]
    out = trusting.release(rnd.request([scaled(ring, rnd.c0["v"][0], factor)]))
    decryption = [(int(x) + factor // 2) // factor for x in coefficients_of(ring, out.values["w"])]
    key = key_from_decryption(ring, decryption, rnd.c0["v"][0], rnd.a["v"][0])
    assert np.count_nonzero(key != secret_coefficients(ring, keys.secret)) == 0

    ids, roster, ledgers = _federation(["a", "v"])
    rnd = signed_round(keys, ids, roster, ledgers, _updates(ring.n, ids, 1e-6), key_holder="a")
    with pytest.raises(REFUSED):
        _holder(secagg.KeyHolder, keys, ids, roster, ledgers, "a").release(
            rnd.request([scaled(ring, rnd.c0["v"][0], factor)]))


def test_a_set_of_one_is_refused(compact_keys):
    """On Flower every contributor is a key holder: the server asks one node to release another's
    upload alone."""
    keys = compact_keys
    updates = _updates(100, ["a", "v"], 0.05)
    ids, roster, ledgers = _federation(["a", "v"], group_size=1)
    rnd = signed_round(keys, ids, roster, ledgers, updates, key_holder="a", members=["v"])
    out = _holder(secagg.KeyHolder, keys, ids, roster, ledgers, "a", min_contributors=1).release(
        rnd.request(rnd.honest_sum("c0")))
    np.testing.assert_allclose(out.values["w"], updates["v"]["w"], atol=released_tolerance(keys.secret.preset, 1))

    ids, roster, ledgers = _federation(["a", "v"], group_size=1)
    rnd = signed_round(keys, ids, roster, ledgers, updates, key_holder="a", members=["v"])
    with pytest.raises(secagg.ReleaseRefusedError, match="at least 2 clients"):
        _holder(secagg.KeyHolder, keys, ids, roster, ledgers, "a").release(rnd.request(rnd.honest_sum("c0")))


# ---- isolation: relabelling and double adding ----------------------------------------------------
def test_one_upload_relabelled_as_the_sum_of_three_is_refused(compact_keys):
    keys = compact_keys
    names = ["a", "b", "v"]
    updates = _updates(100, names, 0.05)
    tol = released_tolerance(keys.secret.preset, 3)
    ids, roster, ledgers = _federation(names)
    rnd = signed_round(keys, ids, roster, ledgers, updates, key_holder="a")
    trusting = _holder(TrustingKeyHolder, keys, ids, roster, ledgers, "a")
    trusting.halves = rnd.a["v"]
    out = trusting.release(rnd.request(rnd.c0["v"]))  # "the sum of a, b and v" is v's upload alone
    np.testing.assert_allclose(out.values["w"], updates["v"]["w"], atol=tol)

    ids, roster, ledgers = _federation(names)
    rnd = signed_round(keys, ids, roster, ledgers, updates, key_holder="a")
    with pytest.raises(REFUSED):
        _holder(secagg.KeyHolder, keys, ids, roster, ledgers, "a").release(rnd.request(rnd.c0["v"]))


def test_an_upload_added_twice_is_refused(compact_keys):
    """In the ratio form, v's upload added twice (numerator and weight doubled) releases v's update."""
    keys = compact_keys
    ring = Ring(keys.secret.preset)
    names = ["a", "v"]
    updates = _updates(100, names, 0.05)
    ids, roster, ledgers = _federation(names)
    rnd = signed_round(keys, ids, roster, ledgers, updates, key_holder="a", weights=1.0)
    twice = [ring.add(c, c) for c in rnd.c0["v"]]
    trusting = _holder(TrustingKeyHolder, keys, ids, roster, ledgers, "a")
    trusting.halves = [ring.add(a, a) for a in rnd.a["v"]]
    out = trusting.release(rnd.request(twice))
    np.testing.assert_allclose(out.values["w"], updates["v"]["w"], atol=released_tolerance(keys.secret.preset, 2))

    ids, roster, ledgers = _federation(names)
    rnd = signed_round(keys, ids, roster, ledgers, updates, key_holder="a", weights=1.0)
    with pytest.raises(REFUSED):
        _holder(secagg.KeyHolder, keys, ids, roster, ledgers, "a").release(
            rnd.request([ring.add(c, c) for c in rnd.c0["v"]]))


def test_mixed_chunk_seeds_are_refused(compact_keys):
    """Two chunks, the second mostly padding: the server moves v's second-chunk upload (and seed)
    into chunk 0, where v's zeros leave b's values of slots 576..8191 alone in the release."""
    keys = compact_keys
    ring = Ring(keys.secret.preset)
    names = ["b", "v"]
    updates = _updates(ring.n + 576, names, 0.05)
    ids, roster, ledgers = _federation(names)
    rnd = signed_round(keys, ids, roster, ledgers, updates, key_holder="b")
    body = [ring.add(rnd.c0["v"][1], rnd.c0["b"][0]), ring.add(rnd.c0["v"][0], rnd.c0["b"][1])]
    mixing = _holder(ChunkMapKeyHolder, keys, ids, roster, ledgers, "b")
    mixing.chunk_map = {"v": [1, 0]}
    out = mixing.release(rnd.request(body))
    leaked = out.values["w"][576:ring.n]
    assert leaked.size == 7616
    np.testing.assert_allclose(leaked, updates["b"]["w"][576:ring.n], atol=released_tolerance(keys.secret.preset, 2))

    ids, roster, ledgers = _federation(names)
    rnd = signed_round(keys, ids, roster, ledgers, updates, key_holder="b")
    body = [ring.add(rnd.c0["v"][1], rnd.c0["b"][0]), ring.add(rnd.c0["v"][0], rnd.c0["b"][1])]
    with pytest.raises(REFUSED):  # the seed names its chunk: v's share of chunk 0 is rebuilt for chunk 0
        _holder(secagg.KeyHolder, keys, ids, roster, ledgers, "b").release(rnd.request(body))


# ---- one set, one release, per round -------------------------------------------------------------
def _two_sets(keys, ids, roster, ledgers, updates):
    """Set {a, b, v} released by a, then {a, b} by b: the difference is v's update."""
    first = signed_round(keys, ids, roster, ledgers, updates, key_holder="a")
    one = secagg.KeyHolder(keys.secret, identity=ids["a"], roster=roster, ledger=ledgers["a"], min_contributors=1)
    whole = one.release(first.request(first.honest_sum("c0"))).values["w"]
    cset = secagg.ContributorSet.of(run="run", round=0, key_holder="b",
                                    receipts=[first.state.receipt(m) for m in ("a", "b")])
    sigs = {m: secagg.Uploader(keys.secret, identity=ids[m], ledger=ledgers[m], roster=roster,
                               min_contributors=1).sign_set(cset) for m in cset.members}
    first.cset, first.signatures = cset, sigs
    two = secagg.KeyHolder(keys.secret, identity=ids["b"], roster=roster, ledger=ledgers["b"], min_contributors=1)
    return whole - two.release(first.request(first.honest_sum("c0"))).values["w"]


def test_a_second_set_of_the_same_round_is_never_signed(compact_keys, monkeypatch):
    """Enrolment groups switched off here, to show the sign-once defence on its own."""
    monkeypatch.setattr(secagg.Roster, "check_whole_groups", lambda self, members, *, min_size: None)
    names = ["a", "b", "v"]
    updates = _updates(100, names, 0.05)
    ids, roster, ledgers = _federation(names, forgetful=True)
    leaked = _two_sets(compact_keys, ids, roster, ledgers, updates)
    np.testing.assert_allclose(leaked, updates["v"]["w"], atol=2 * released_tolerance(compact_keys.secret.preset, 3))

    ids, roster, ledgers = _federation(names)
    with pytest.raises(secagg.ReleaseRefusedError, match="already signed another contributor set"):
        _two_sets(compact_keys, ids, roster, ledgers, updates)


def test_one_set_is_released_once_whatever_its_first_half(compact_keys):
    """Two releases of one set, the second with the weight's first half shifted by a known t, give
    the numerator and the total weight separately (r1 = N/W, r2 = N/(W + t))."""
    keys = compact_keys
    ring = Ring(keys.secret.preset)
    names = ["a", "v"]
    rng = np.random.default_rng(3)
    updates = {c: {"w": rng.uniform(-0.05, 0.05, 10)} for c in names}

    def attack(ledgers):
        ids, roster, _ = _federation(names)
        rnd = signed_round(keys, ids, roster, ledgers, {c: updates[c] for c in names}, key_holder="a", weights=1.0)
        holder = _holder(secagg.KeyHolder, keys, ids, roster, ledgers, "a")
        body = rnd.honest_sum("c0")
        r1 = holder.release(rnd.request(body)).values["w"]
        t = np.zeros(ring.n)
        t[rnd.state.layout[secagg.WEIGHTS_ENTRY].offset] = -0.5  # stays within the weight's range
        r2 = holder.release(rnd.request([shift(ring, body[0], t)])).values["w"]
        return -0.5 * r2 / (r1 - r2)  # = W, the total weight, in every coordinate

    # weight 1 each: the total weight is the number of members, 2
    assert np.median(attack({c: ForgetfulLedger() for c in names})) == pytest.approx(2.0, rel=0.05)
    with pytest.raises(secagg.ReleaseRefusedError, match="already released"):
        attack({c: secagg.MemoryLedger() for c in names})


def test_a_refusal_spends_the_round_so_refusals_are_no_oracle(compact_keys):
    """With a range check on the raw decryption and nothing spent first, a server bisects a shift of
    its first half until the key holder starts refusing: that locates the raw value to 1e-12, a
    million times finer than the flooding hides it (the review recovered the key from ~370,000 such
    answers). The real key holder spends the round before it decrypts, and checks flooded values."""
    keys = compact_keys
    ring = Ring(keys.secret.preset)
    names = ["a", "v"]
    updates = _updates(ring.n, names, 0.01)
    bound = len(names) * keys.secret.preset.max_abs

    def oracle(holder, rnd, t):
        nudge = np.zeros(ring.n)
        nudge[0] = t
        try:
            holder.release(rnd.request([shift(ring, rnd.honest_sum("c0")[0], nudge)]))
            return False
        except secagg.ReleaseRefusedError:
            return True

    ids, roster, ledgers = _federation(names, forgetful=True)
    rnd = signed_round(keys, ids, roster, ledgers, updates, key_holder="a")
    holder = _holder(RawCheckKeyHolder, keys, ids, roster, ledgers, "a")
    lo, hi = 0.0, 2 * bound
    for _ in range(48):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if oracle(holder, rnd, mid) else (mid, hi)
    raw = decrypt_raw(holder, rnd.request(rnd.honest_sum("c0")))[0]
    sigma = 2.0**keys.secret.preset.flood_bits * keys.secret.preset.noise_std() * np.sqrt(2)
    assert abs((bound - lo) - raw) < 1e-9 < sigma / 1000

    ids, roster, ledgers = _federation(names)
    rnd = signed_round(keys, ids, roster, ledgers, updates, key_holder="a")
    holder = _holder(secagg.KeyHolder, keys, ids, roster, ledgers, "a")
    assert oracle(holder, rnd, 1.5 * bound)  # refused, and the round is spent by that refusal
    with pytest.raises(secagg.ReleaseRefusedError, match="already released"):
        holder.release(rnd.request(rnd.honest_sum("c0")))


# ---- across rounds and runs ----------------------------------------------------------------------
def _rounds(keys, ids, roster, ledgers, updates):
    """Round 0 releases {a, b, v}; in round 1 the server says v dropped and resends the same model:
    a and b send the same updates again, and round 0 minus round 1 is v's update."""
    first = signed_round(keys, ids, roster, ledgers, updates, key_holder="a", round=0)
    holder = secagg.KeyHolder(keys.secret, identity=ids["a"], roster=roster, ledger=ledgers["a"])
    whole = holder.release(first.request(first.honest_sum("c0"))).values["w"]
    second = signed_round(keys, ids, roster, ledgers, {c: updates[c] for c in ("a", "b")}, key_holder="a", round=1)
    return whole - holder.release(second.request(second.honest_sum("c0"))).values["w"]


def test_releases_cover_whole_enrolment_groups_so_rounds_do_not_difference(compact_keys, monkeypatch):
    names = ["a", "b", "v"]
    updates = _updates(100, names, 0.05)
    ids, roster, ledgers = _federation(names)
    with monkeypatch.context() as off:
        off.setattr(secagg.Roster, "check_whole_groups", lambda self, members, *, min_size: None)
        leaked = _rounds(compact_keys, ids, roster, ledgers, updates)
    np.testing.assert_allclose(leaked, updates["v"]["w"], atol=5 * released_tolerance(compact_keys.secret.preset, 3))

    ids, roster, ledgers = _federation(names)
    with pytest.raises(secagg.ReleaseRefusedError, match="enrolment group"):
        _rounds(compact_keys, ids, roster, ledgers, updates)


def test_an_earlier_runs_request_is_not_released_in_a_later_run(compact_keys):
    """Without run ids every run has the same label: a key holder restarted for run 2 (its records
    are per run) that committed to the same initial model would release run 1's request again,
    with a shifted first half (numerator and total weight apart, as above)."""
    keys = compact_keys
    names = ["a", "v"]
    updates = _updates(10, names, 0.05)
    ids, roster, _ = _federation(names)

    def replay(run_1, run_2):
        old = signed_round(keys, ids, roster, {c: secagg.MemoryLedger() for c in names}, updates, key_holder="a",
                           run=run_1, weights=1.0, commitment="ab" * 32)
        ledgers = {c: secagg.MemoryLedger() for c in names}
        signed_round(keys, ids, roster, ledgers, updates, key_holder="a", run=run_2, weights=1.0,
                     commitment="ab" * 32)  # run 2's round 0: the same model, committed to alike
        holder = _holder(secagg.KeyHolder, keys, ids, roster, ledgers, "a")
        return holder.release(old.request(old.honest_sum("c0"))).values["w"]

    np.testing.assert_allclose(replay("run", "run"), np.mean([u["w"] for u in updates.values()], axis=0), atol=1e-5)
    with pytest.raises(secagg.ReleaseRefusedError, match="uploaded for itself"):
        replay("run-1", "run-2")


@pytest.mark.parametrize(("shift_by", "max_weight"), [(1.5, 1.0), (-3.0, 1.0), (0.0, 0.4)])
def test_a_total_weight_beyond_the_members_range_is_withheld(compact_keys, shift_by, max_weight):
    """Weights lie in [0, max_weight] (the server-scored protocol sets it to the polynomial's
    largest value): a flooded total outside [0, members x max_weight] is refused."""
    keys = compact_keys
    ring = Ring(keys.secret.preset)
    names = ["a", "v"]
    ids, roster, ledgers = _federation(names)
    rnd = signed_round(keys, ids, roster, ledgers, _updates(10, names, 0.05), key_holder="a", weights=0.5)
    t = np.zeros(ring.n)
    t[rnd.state.layout[secagg.WEIGHTS_ENTRY].offset] = shift_by
    holder = _holder(secagg.KeyHolder, keys, ids, roster, ledgers, "a", max_weight=max_weight)
    with pytest.raises(secagg.ReleaseRefusedError, match="total weight"):
        holder.release(rnd.request([shift(ring, rnd.honest_sum("c0")[0], t)]))
