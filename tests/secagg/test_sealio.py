"""SEAL objects through anonymous in-memory files: per thread, per process, emptied after use."""

import gc
import os
import struct
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


def test_a_forked_child_neither_shares_nor_keeps_the_parents_file(keys):
    """A descriptor is shared, not copied, at a fork: the child must close the parent's file (or it
    would read what the parent writes later) and write to a file of its own."""
    _, ct = _ciphertext(keys)
    sealio.dump(ct)
    parent_fd = sealio._local.memfd.fd
    parent = os.fstat(parent_fd).st_ino
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without cleanup
        try:
            try:
                os.fstat(parent_fd)
                inherited = "open"
            except OSError:
                inherited = "closed"
            sealio.dump(ct)
            os.write(write, f"{inherited} {os.fstat(sealio._local.memfd.fd).st_ino}".encode())
        finally:
            os._exit(0)
    os.close(write)
    inherited, child = os.read(read, 64).decode().split()
    os.waitpid(pid, 0)
    os.close(read)
    assert inherited == "closed" and int(child) != parent


@pytest.mark.parametrize("path", ["in place", "files"])
def test_secrets_leave_nothing_in_the_file(keys, monkeypatch, path):
    """The secret key's residues (a dealer's, a client's) and a raw, unflooded sum (a combiner's) are wiped at once."""
    from secagg import sealmem

    if path == "files":
        monkeypatch.setattr(sealmem, "_state", False)
    ring = Ring(keys.secret.preset)
    os.ftruncate(sealio._memfd().fd, 0)  # this thread's file, empty
    ring.secret_ntt(keys.secret)
    assert os.fstat(sealio._local.memfd.fd).st_size == 0
    keys.secret.data_key = None  # built on first use, then kept: build it here
    ring.key_factor(keys.secret)  # a client's key as the factor of its encryptions
    assert keys.secret.data_key is not None
    assert os.fstat(sealio._local.memfd.fd).st_size == 0
    ring.decode_ntt(ring.zeros())
    assert os.fstat(sealio._local.memfd.fd).st_size == 0
    ring.plaintext(ring.zeros())  # public: through a file, kept until the next blob overwrites it
    assert (os.fstat(sealio._local.memfd.fd).st_size > 0) == (path == "files")


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


@pytest.mark.parametrize("memfd", [True, False])
@pytest.mark.parametrize("cut", [1, 8, 4096])
def test_a_short_blob_after_a_long_one_is_read_as_itself(keys, monkeypatch, memfd, cut):
    """The file is overwritten, not emptied, between blobs: a blob cut short (its declared size
    fixed up) must be refused, not completed by the longer blob's leftover bytes."""
    monkeypatch.setattr(sealio, "_MEMFD_OK", memfd)
    ring, ct = _ciphertext(keys)
    full = sealio.inflate(sealio.dump(ct), max_inflated=10**8, what="a ciphertext")
    bound = 8 * len(full)
    sealio.load(sealapi.Ciphertext, ring.seal, full, max_inflated=bound, what="a ciphertext")  # leaves it in the file
    short = bytearray(full[:-cut])
    struct.pack_into("<Q", short, 8, len(short))
    with pytest.raises(secagg.PayloadError):
        sealio.load(sealapi.Ciphertext, ring.seal, bytes(short), max_inflated=bound, what="a ciphertext")
    small = ring.plaintext(ring.zeros())  # a shorter object after the ciphertext, into the same file
    assert small.coeff_count() == ring.limbs * ring.n and small.is_zero()
