"""How an `etsypro` process ends when it is asked to: SIGTERM (systemd, Docker, Kubernetes),
SIGHUP (a closed terminal) and SIGINT (Ctrl-C) all end it through Python's normal exit path.

Python's default for SIGTERM and SIGHUP is to die at once, skipping `finally` blocks and exit
handlers: the embedded PostgreSQL, stopped by one of those handlers when its last user exits,
outlived every `etsypro serve` stopped that way, and the dead process stayed listed as its user.
"""

from __future__ import annotations

import signal


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM (or SIGHUP) where no command handles it itself."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)  # the shell's convention for "ended by signal N"
        self.signum = signum


def exit_cleanly_on_signals() -> None:
    """SIGTERM raises Terminated; SIGHUP is taken as SIGTERM. Commands that stop gracefully install
    their own SIGTERM handler on top (uvicorn, the projector, the policy): SIGHUP reaches it too,
    and uvicorn re-raises the signal once it has shut down, which then ends up here."""
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _as_sigterm)


def _terminate(signum: int, frame) -> None:
    raise Terminated(signum)


def _as_sigterm(signum: int, frame) -> None:
    signal.raise_signal(signal.SIGTERM)
