"""Threshold keys: each client's own key, a 5-member committee with threshold 3, attacks by t-1
colluding members with the server. The ceremony runs once per module (strict preset)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from helpers import released_tolerance
from helpers.attacker import ForgetfulLedger, centred, from_ntt, pointwise_inverse, secret_coefficients

import secagg
from secagg import shamir
from secagg.committee import Committee, Dealing, HolderKeys, deal
from secagg.epoch import HolderShares, check_ceremony
from secagg.messages import decode_request
from secagg.ring import Ring
from secagg.threshold import CommitteeMember, round_half

N_VALUES = 3000
COMMIT = "cd" * 32


def _ceremony(names, members, threshold, *, corrupt=None):
    ids, roster = secagg.generate_identities(names, group_size=2)
    keys = {c: secagg.generate_keys(preset="strict").secret for c in names}
    hk = {m: HolderKeys.generate() for m in members}
    committee = Committee.of(preset="strict", threshold=threshold, members=[(m, hk[m]) for m in members])
    dealings = {c: Dealing.from_bytes(deal(keys[c], ids[c], committee).to_bytes()) for c in names}
    shares = {m: HolderShares(committee, m) for m in members}
    for m in members:
        for c in names:
            shares[m].accept(dealings[c], keys=hk[m], roster=roster)
    if corrupt:
        corrupt(shares)
    partials = {m: shares[m].test_partials() for m in members}
    return SimpleNamespace(names=names, members=members, ids=ids, roster=roster, keys=keys, hk=hk, committee=committee,
                           dealings=dealings, shares=shares, partials=partials)


@pytest.fixture(scope="module")
def fed():
    f = _ceremony([f"c{i}" for i in range(10)], [f"c{i}" for i in range(5)], 3)
    f.epoch = check_ceremony(f.committee, f.dealings, f.partials)
    f.updates = {c: {"w": np.random.default_rng(i).uniform(-0.05, 0.05, N_VALUES)} for i, c in enumerate(f.names)}
    return f


def _round(f, *, run, ledgers, rnd=0, combiner="c0", members=None):
    """Every client uploads (ratio form, weight 1); the server proposes ``members`` (default all)."""
    layout = secagg.Layout.of({"w": np.zeros(N_VALUES), secagg.WEIGHTS_ENTRY: np.zeros(1)})
    state = secagg.Aggregator(f.epoch, roster=f.roster).open_round(run=run, round=rnd, layout=layout, keep_uploads=True)
    uploaders = {c: secagg.Uploader(f.keys[c], identity=f.ids[c], ledger=ledgers[c], roster=f.roster, epoch=f.epoch)
                 for c in f.names}
    for c in f.names:
        state.receive(uploaders[c].upload(f.updates[c], run=run, round=rnd, commitment=COMMIT, weights=1.0))
    members = members or f.names
    cset = secagg.ContributorSet.of(run=run, round=rnd, key_holder=combiner,
                                    receipts=[state.receipt(m) for m in sorted(members)])
    return state.request(cset, {m: uploaders[m].sign_set(cset) for m in cset.members}), uploaders, state


def _committee(f, ledgers):
    return {m: CommitteeMember(shares=f.shares[m], keys=f.hk[m], identity=f.ids[m], epoch=f.epoch, roster=f.roster,
                               ledger=ledgers[m]) for m in f.members}


def _release(members, request, quorum):
    parts = {m: members[m].partial(request, quorum=quorum) for m in quorum}
    return members[quorum[0]].combine(request, quorum=quorum, partials=parts)


def _ledgers(f):
    return {c: secagg.MemoryLedger() for c in f.names}


# ---- correctness and dropouts --------------------------------------------------------------------
def test_a_release_with_two_members_dropped_equals_the_mean(fed):
    ledgers = _ledgers(fed)
    request, _, _ = _round(fed, run="ok", ledgers=ledgers)
    out = _release(_committee(fed, ledgers), request, ["c0", "c3", "c4"])  # c1 and c2 are gone
    mean = np.mean([u["w"] for u in fed.updates.values()], axis=0)
    tol = 2 * released_tolerance(fed.epoch.preset, 10) / 10  # the quorum's and the combiner's noise, over weight 10
    assert out.contributors == tuple(sorted(fed.names))
    np.testing.assert_allclose(out.values["w"], mean, atol=tol)


def test_three_members_dropped_or_one_lost_after_partials_aborts_with_nothing_released(fed):
    ledgers = _ledgers(fed)
    request, _, _ = _round(fed, run="drop", ledgers=ledgers)
    members = _committee(fed, ledgers)
    with pytest.raises(secagg.QuorumError):  # only c0 and c1 answer: no quorum of 3
        members["c1"].partial(request, quorum=["c0", "c1"])
    parts = {m: members[m].partial(request, quorum=["c0", "c3", "c4"]) for m in ("c0", "c3")}  # then c4 drops
    with pytest.raises(secagg.QuorumError, match="missing"):
        members["c0"].combine(request, quorum=["c0", "c3", "c4"], partials=parts)
    with pytest.raises(secagg.ReleaseRefusedError, match="already gave a partial"):  # no second quorum for c3
        members["c3"].partial(request, quorum=["c0", "c2", "c3"])


# ---- attacks: t-1 colluding members (the combiner among them) and the server --------------------
def _weighted(ring, x, lam):
    return np.stack([shamir.scalar_mul(x[i], lam[i], q) for i, q in enumerate(ring.primes)])


def _key_from_partials(f, request, honest_partials, quorum, colluders, known_client):
    """The colluders divide ``a`` out of the honest member's partial of every chunk (the smudging
    noise is what they cannot divide out): ``lambda_h X_h + E / a``; with their own weighted shares
    that is the set's key sum, minus the colluding client's key: the target's key."""
    req = decode_request(request, max_members=len(f.roster))
    ring = Ring(f.epoch.preset)
    index = {h: f.committee.card(h).index for h in quorum}
    points = sorted(index.values())
    lam = {h: [shamir.lagrange_at_zero(points, q)[index[h]] for q in ring.primes] for h in quorum}
    colluding = ring.zeros()
    for c in colluders:
        colluding = ring.add(colluding, _weighted(ring, f.shares[c].share_sum(req.cset.members), lam[c]))
    known = ring.neg(ring.secret_ntt(f.keys[known_client]))
    guesses = []
    for j, p in enumerate(honest_partials):
        a = ring.uniform(round_half(f.epoch, req.cset.run, req.cset.round, j))
        target = ring.add(ring.add(ring.mul(p, pointwise_inverse(ring, a)), colluding), known)
        guesses.append(centred(ring, from_ntt(ring, target)))
    return guesses


@pytest.mark.parametrize("smudging", [False, True])
def test_three_rounds_of_partials_give_colluders_a_clients_key_only_without_smudging(fed, smudging, monkeypatch):
    """Set {c6, c7}, an enrolment group (c7 colludes with the server, as do members c0 - the
    combiner - and c1): the honest member c2's partial of each chunk, with a divided out, is its
    weighted share of s_c6 + s_c7 plus noise / a. Over three rounds the colluders' guesses of s_c6
    are exact without smudging and at chance with it."""
    if not smudging:
        monkeypatch.setattr("secagg.threshold.smudging_std", lambda preset, terms: 0.0)
    ring = Ring(fed.epoch.preset)
    truth = secret_coefficients(ring, fed.keys["c6"])
    chance = np.mean(truth == 0)  # the best blind guess: every coefficient 0
    hits = []
    for rnd in range(3):
        ledgers = _ledgers(fed)
        request, _, _ = _round(fed, run=f"collude-{smudging}", rnd=rnd, ledgers=ledgers, members=["c6", "c7"])
        members = _committee(fed, ledgers)
        sealed = members["c2"].partial(request, quorum=["c0", "c1", "c2"])
        req = decode_request(request, max_members=len(fed.roster))
        from secagg.threshold import _request_digest
        opened = members["c0"]._open(req, ["c0", "c1", "c2"], "c2", sealed, _request_digest(req))  # the combiner colludes
        for guess in _key_from_partials(fed, request, opened, ["c0", "c1", "c2"], ["c0", "c1"], "c7"):
            hits.append(np.mean(guess == truth))
    if smudging:
        assert max(hits) <= chance + 0.02
    else:
        assert min(hits) == 1.0


def test_partials_for_a_set_of_one_a_relabelled_round_or_a_second_set_are_refused(fed):
    ledgers = {c: ForgetfulLedger() if c not in fed.members else secagg.MemoryLedger() for c in fed.names}
    request, uploaders, state = _round(fed, run="refuse", ledgers=ledgers)
    members = _committee(fed, ledgers)
    one = secagg.ContributorSet.of(run="refuse", round=0, key_holder="c0", receipts=[state.receipt("c7")])
    single = state.request(one, {"c7": one.sign(fed.ids["c7"])})  # c7's own signature, even
    with pytest.raises(secagg.ReleaseRefusedError, match="at least 2"):
        members["c3"].partial(single, quorum=["c0", "c3", "c4"])
    future = secagg.ContributorSet.of(run="refuse", round=1, key_holder="c0",
                                      receipts=[state.receipt(c) for c in fed.names])
    with pytest.raises(secagg.ReplayError):  # round-0 receipts relabelled as a later round
        members["c3"].partial(state.request(future, {c: future.sign(fed.ids[c]) for c in fed.names}),
                              quorum=["c0", "c3", "c4"])
    members["c3"].partial(request, quorum=["c0", "c3", "c4"])
    second = secagg.ContributorSet.of(run="refuse", round=0, key_holder="c0",
                                      receipts=[state.receipt(c) for c in fed.names[6:]])  # they sign anything
    other = state.request(second, {c: uploaders[c].sign_set(second) for c in second.members})
    with pytest.raises(secagg.ReleaseRefusedError, match="already gave a partial"):
        members["c3"].partial(other, quorum=["c0", "c3", "c4"])


def test_a_client_never_encrypts_twice_under_one_rounds_second_half(fed, tmp_path):
    ledger = secagg.FileLedger(tmp_path / "c5.ledger")
    first = secagg.Uploader(fed.keys["c5"], identity=fed.ids["c5"], ledger=ledger, epoch=fed.epoch).upload(
        fed.updates["c5"], run="twice", round=0, commitment=COMMIT, weights=1.0)
    restarted = secagg.Uploader(fed.keys["c5"], identity=fed.ids["c5"], ledger=secagg.FileLedger(tmp_path / "c5.ledger"),
                                epoch=fed.epoch)
    again = restarted.upload({"w": np.zeros(N_VALUES)}, run="twice", round=0, commitment=COMMIT, weights=1.0)
    assert again == first  # a retry resends the bytes; it never encrypts another update under that half
    with pytest.raises(secagg.ReplayError):
        restarted.upload(fed.updates["c5"], run="twice", round=0, commitment="ee" * 32, weights=1.0)
    with pytest.raises(secagg.LedgerError):
        secagg.Uploader(fed.keys["c5"], identity=fed.ids["c5"], epoch=fed.epoch)


def test_a_client_uploads_only_with_the_key_it_dealt(fed):
    with pytest.raises(secagg.KeyMismatchError):
        secagg.Uploader(fed.keys["c6"], identity=fed.ids["c5"], ledger=secagg.MemoryLedger(), epoch=fed.epoch)


# ---- the ceremony --------------------------------------------------------------------------------
def test_a_bad_share_names_its_dealer_and_bad_partials_their_member():
    def bad_share(shares):
        dealer_key, share = shares["h2"].shares["d1"]
        share = share.copy()
        share[0, 0] = (share[0, 0] + 1) % np.uint64(Ring(secagg.get_preset("strict")).primes[0])
        shares["h2"].shares["d1"] = (dealer_key, share)

    names = ["h1", "h2", "h3", "d1"]
    f = _ceremony(names, ["h1", "h2", "h3"], 2, corrupt=bad_share)
    with pytest.raises(secagg.CeremonyError, match=r"'d1' dealt a bad share to \['h2'\]"):
        check_ceremony(f.committee, f.dealings, f.partials)
    f = _ceremony(names, ["h1", "h2", "h3"], 2)
    ring = Ring(secagg.get_preset("strict"))
    f.partials["h3"] = {k: ring.add(v, ring.uniform(b"\x07" * 32)) for k, v in f.partials["h3"].items()}
    with pytest.raises(secagg.CeremonyError, match=r"member\(s\) \['h3'\]"):
        check_ceremony(f.committee, f.dealings, f.partials)


def test_forged_or_misdirected_dealings_are_refused(fed):
    dealing = fed.dealings["c7"]
    # one bit flipped (setting the last byte to 0 left it unchanged whenever it was 0 already: 1 run in ~128)
    tampered = Dealing(**{**dealing.__dict__, "tests": dealing.tests[:-1] + bytes([dealing.tests[-1] ^ 1])})
    with pytest.raises(secagg.SignatureError):
        HolderShares(fed.committee, "c1").accept(tampered, keys=fed.hk["c1"], roster=fed.roster)
    with pytest.raises(secagg.AuthenticationError):  # c1's keys cannot open c2's share
        store = HolderShares(fed.committee, "c2")
        store.accept(dealing, keys=fed.hk["c1"], roster=fed.roster)
    store = HolderShares(fed.committee, "c1")
    store.accept(dealing, keys=fed.hk["c1"], roster=fed.roster)
    with pytest.raises(secagg.CeremonyError, match="twice"):
        store.accept(dealing, keys=fed.hk["c1"], roster=fed.roster)


def test_threshold_keys_need_the_strict_presets_smudging():
    with pytest.raises(secagg.CeremonyError, match="strict"):
        Committee.of(preset="compact", threshold=2, members=[("a", HolderKeys.generate()), ("b", HolderKeys.generate())])


def test_a_key_of_the_committees_preset_name_but_other_primes_deals_nothing():
    """A preset name once meant other primes (strict-lean was 40 + 40 bits): the dealer compares the
    parameters, not the name, and says so instead of letting SEAL fail later."""
    from dataclasses import replace

    old = replace(secagg.get_preset("strict-lean"), coeff_modulus_bits=(40, 40, 60))
    ids, _ = secagg.generate_identities(["a"])
    committee = Committee.of(preset="strict-lean", threshold=2, members=[("a", HolderKeys.generate()),
                                                                         ("b", HolderKeys.generate())])
    with pytest.raises(secagg.CeremonyError, match="56\\+24\\+60 bits.*40\\+40\\+60 bits"):
        deal(secagg.generate_keys(preset=old).secret, ids["a"], committee)


def test_a_removed_client_leaves_the_epoch_and_its_shares_are_erased(fed):
    later = fed.epoch.without("c9")
    assert later.id != fed.epoch.id and later.key_of("c9") is None and later.key_of("c8") is not None
    with pytest.raises(secagg.KeyMismatchError):  # its key no longer counts
        secagg.Uploader(fed.keys["c9"], identity=fed.ids["c9"], ledger=secagg.MemoryLedger(), epoch=later)
    shares = {m: HolderShares(fed.committee, m, dict(fed.shares[m].shares), tested=True) for m in fed.members}
    for s in shares.values():
        s.discard("c9")
    assert all("c9" not in s.shares for s in shares.values())
    rest = SimpleNamespace(**{**fed.__dict__, "epoch": later, "shares": shares, "names": fed.names[:8]})
    ledgers = _ledgers(fed)
    request, _, _ = _round(rest, run="rotated", ledgers=ledgers)
    out = _release(_committee(rest, ledgers), request, ["c0", "c1", "c2"])
    mean = np.mean([fed.updates[c]["w"] for c in fed.names[:8]], axis=0)
    np.testing.assert_allclose(out.values["w"], mean, atol=2 * released_tolerance(later.preset, 8) / 8)
