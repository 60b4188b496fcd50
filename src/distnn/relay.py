"""The ``--procs`` launcher's relay: copies mpiexec's standard error to the user's as it
comes, and notes a stall when a rank's stall message passes.

    python relay.py NOTE_PATH MARK   (standard input: mpiexec's standard error)

mpiexec carries every rank's standard error, from every host, so the stall message
(``launch.STALLED_MARK``) reaches the relay wherever the rank that saw the stall runs;
the relay then creates ``NOTE_PATH``, which the launcher watches. It is a process of its
own, run by path without importing distnn: if the launcher is killed, mpiexec can still
write (a dead reader would kill it with SIGPIPE before the ranks have stopped and
saved). It copies without line buffering (progress bars rewrite their line) and ends
when every writer has closed the pipe; a reader that went away only stops the copying.
"""

import os
import signal
import sys

CHUNK = 1 << 16


def main(note: str, mark: bytes) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the terminal's Ctrl-C is the launcher's
    sink, tail, noted, copying = sys.stderr.fileno(), b"", False, True
    while chunk := os.read(sys.stdin.fileno(), CHUNK):
        if not noted and mark in tail + chunk:
            open(note, "w").close()
            noted = True
        tail = (tail + chunk)[-len(mark):]
        try:
            while copying and chunk:
                chunk = chunk[os.write(sink, chunk):]
        except OSError:
            copying = False


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].encode())
