import os
import stat

import numpy as np
import pytest

import secagg
from secagg.errors import KeyFileError, MissingSecretKeyError


def test_save_load_roundtrip_and_file_modes(tmp_path, compact_keys):
    paths = compact_keys.save(tmp_path)
    assert stat.S_IMODE(os.stat(paths["client"]).st_mode) == 0o600
    secret = secagg.load_secret_context(paths["client"])
    public = secagg.load_public_context(paths["server"])
    assert secret.fingerprint == public.fingerprint == compact_keys.secret.fingerprint
    loaded = secagg.KeySet(secret=secret, public=public)
    out = secagg.local_round(loaded, {c: {"w": np.full(5, 0.125)} for c in ("a", "b")})
    assert np.allclose(out.values["w"], 0.25, atol=1e-4)


def test_secret_files_are_created_exclusively_and_never_through_a_link(tmp_path, compact_keys):
    target = tmp_path / "client.key"
    target.write_bytes(b"old")
    os.chmod(target, 0o644)
    with pytest.raises(KeyFileError, match="already exists"):
        compact_keys.secret.save(target)
    assert target.read_bytes() == b"old"
    compact_keys.secret.save(target, overwrite=True)  # replaced, mode 0600 from the first byte
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600 and target.read_bytes() != b"old"
    elsewhere = tmp_path / "planted"
    link = tmp_path / "linked.key"
    link.symlink_to(elsewhere)
    with pytest.raises(KeyFileError):
        compact_keys.secret.save(link)  # a link planted where the key goes is not followed
    assert not elsewhere.exists()
    compact_keys.secret.save(link, overwrite=True)  # replaces the link itself
    assert not elsewhere.exists() and not link.is_symlink()


def test_server_side_objects_hold_no_secret_key(compact_keys):
    public = compact_keys.public
    assert not any(type(v).__name__ == "SecretKey" for v in vars(public).values())
    assert "secret_key" not in public._blobs
    server_bytes = public.to_bytes()
    secret_blob = compact_keys.secret._blobs["secret_key"]
    assert secret_blob[16:80] not in server_bytes  # no fragment of the serialised secret key
    with pytest.raises(MissingSecretKeyError, match="key holder"):
        public.decrypt()
    ids, roster = secagg.generate_identities(["a"])
    with pytest.raises(MissingSecretKeyError):
        secagg.KeyHolder(secagg.load_public_context(server_bytes), identity=ids["a"], roster=roster)
    with pytest.raises(MissingSecretKeyError):
        secagg.Uploader(public, identity=ids["a"])
    with pytest.raises(KeyFileError, match="expected 'secret'"):
        secagg.load_secret_context(server_bytes)


def test_public_context_rejects_a_secret_key_blob(compact_keys):
    with pytest.raises(KeyFileError, match="must not carry a secret key"):
        secagg.PublicContext(compact_keys.secret.preset, dict(compact_keys.secret._blobs))


def test_key_sets_have_distinct_fingerprints():
    a, b = secagg.generate_keys(preset="compact"), secagg.generate_keys(preset="compact")
    assert a.secret.fingerprint != b.secret.fingerprint


def test_corrupted_or_wrong_key_files(tmp_path, compact_keys):
    paths = compact_keys.save(tmp_path)
    data = bytearray(paths["client"].read_bytes())
    data[200] ^= 0x01
    with pytest.raises(KeyFileError, match="corrupted"):
        secagg.load_secret_context(bytes(data))
    with pytest.raises(KeyFileError, match="truncated"):
        secagg.load_secret_context(paths["client"].read_bytes()[:20])
    with pytest.raises(KeyFileError, match="cannot read"):
        secagg.load_public_context(tmp_path / "missing.ctx")
    with pytest.raises(KeyFileError, match="use server.ctx"):
        secagg.load_public_context(paths["client"])


def test_key_file_with_swapped_public_key_fails_fingerprint(compact_keys):
    from secagg.framing import frame
    from secagg.keys import _KEY_MAGIC, _KEY_VERSION

    other = secagg.generate_keys(preset="compact")
    header = {"role": "public", "preset": compact_keys.public.preset.to_dict(),
              "fingerprint": compact_keys.public.fingerprint, "objects": ["public_key"]}
    forged = frame(_KEY_MAGIC, _KEY_VERSION, header, [other.public._blobs["public_key"]])
    with pytest.raises(KeyFileError, match="fingerprint"):
        secagg.load_public_context(forged)


@pytest.mark.slow
def test_deep_preset_server_context_has_only_needed_eval_keys(tmp_path):
    keys = secagg.generate_keys(preset="deep")
    assert keys.public.relin_keys is not None and keys.public.galois_keys is not None
    assert keys.public.galois_keys.size() == 14  # 13 power-of-two rotations + conjugation
    paths = keys.save(tmp_path)
    public = secagg.load_public_context(paths["server"])
    assert public.galois_keys.size() == 14
    assert "secret_key" not in public._blobs
