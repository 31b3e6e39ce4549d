"""SEAL objects through anonymous in-memory files: per thread, per process, emptied after use."""

import gc
import os
import threading

import numpy as np
import pytest
import tenseal.sealapi as sealapi

import secagg
from secagg import sealio
from secagg.ring import Ring, second_half

pytestmark = pytest.mark.skipif(not sealio._MEMFD_OK, reason="no memfd_create on this platform")


def _ciphertext(keys):
    ring = Ring(keys.secret.preset)
    a = ring.uniform(second_half(b"m" * 32, chunk=0, preset=ring.preset))
    return ring, ring.ciphertext(ring.encrypt(np.full(ring.n, 0.5), keys.secret, a), a)


def test_the_anonymous_file_and_a_named_one_give_the_same_bytes_and_objects(keys, monkeypatch):
    ring, ct = _ciphertext(keys)
    anonymous = sealio.dump(ct)
    monkeypatch.setattr(sealio, "_MEMFD_OK", False)
    named = sealio.dump(ct)
    back = sealio.load(sealapi.Ciphertext, ring.seal, named, max_inflated=len(ring._ct_prefix) + 2 * ring.residue_bytes * 2,
                       what="a ciphertext")
    assert anonymous == named == sealio.dump(back)
    assert os.listdir(sealio._scratch_dir()) == []  # the named file is gone too


def test_a_secret_key_leaves_nothing_in_the_file(keys):
    blob = sealio.dump(keys.secret.secret_key)
    assert os.fstat(sealio._local.memfd.fd).st_size == 0
    sealio.load(sealapi.SecretKey, keys.secret.seal, blob, max_inflated=10 * len(blob), what="a key")
    assert os.fstat(sealio._local.memfd.fd).st_size == 0


def test_a_forked_child_writes_to_a_file_of_its_own(keys):
    _, ct = _ciphertext(keys)
    sealio.dump(ct)
    parent = os.fstat(sealio._local.memfd.fd).st_ino
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the inode of the file it used, then leave without cleanup
        try:
            sealio.dump(ct)
            os.write(write, str(os.fstat(sealio._local.memfd.fd).st_ino).encode())
        finally:
            os._exit(0)
    os.close(write)
    child = int(os.read(read, 64).decode())
    os.waitpid(pid, 0)
    os.close(read)
    assert child != parent


def test_threads_that_end_close_their_files(keys):
    _, ct = _ciphertext(keys)
    sealio.dump(ct)  # this thread's own file exists before the count
    before = len(os.listdir("/proc/self/fd"))
    threads = [threading.Thread(target=sealio.dump, args=(ct,)) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_short_blob_after_a_long_one_loads_as_itself(keys):
    """The file is overwritten, not emptied, between blobs: SEAL must read only the new blob's bytes."""
    ring, ct = _ciphertext(keys)
    sealio.dump(ct)  # the longer blob, left in the file
    small = ring.plaintext(ring.zeros())  # written after the ciphertext, into the same file
    assert os.fstat(sealio._local.memfd.fd).st_size > len(ring._blob(ring._pt_prefix, ring.zeros()))
    assert small.coeff_count() == ring.limbs * ring.n and small.is_zero()
    bad = bytearray(ring._blob(ring._pt_prefix, ring.zeros()))
    bad[-1] = 0xFF  # a residue beyond its prime: SEAL refuses it, whatever follows in the file
    with pytest.raises(secagg.PayloadError):
        sealio.load_own(sealapi.Plaintext, ring.seal, bad, what="a plaintext")
