"""Worker process of :mod:`secagg.parallel`: ``python -m secagg._worker RESULT_FD``.

Reads the secret context, then ``(op, payload)`` tasks from stdin; writes ``(status, value)``
to the inherited pipe ``RESULT_FD`` (stdout stays free for whatever libraries print).
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from secagg.keys import load_secret_context
    from secagg.parallel import encrypt_range, receive, send

    tasks = sys.stdin.buffer
    results = os.fdopen(int(sys.argv[1]), "wb")
    context = load_secret_context(receive(tasks))
    while True:
        try:
            op, payload = receive(tasks)
        except EOFError:
            return
        try:
            if op == "encrypt":
                vector, seed, label, first, last = payload
                send(results, ("ok", encrypt_range(vector, context, seed=seed, label=label, first=first, last=last)))
            else:
                send(results, ("error", f"unknown operation {op!r}"))
        except Exception as exc:  # report, keep serving: the parent decides
            send(results, ("error", f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    main()
