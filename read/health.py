"""Whether this deployment can serve truthfully (`GET /health/ready`): the database answers, its
schema is the one the code expects, and no follower has left an event waiting too long.

A follower's lag is judged by time, not count: "seconds behind" is how long the oldest event it
has not applied has waited (projections/lag.py). A follower keeping up with a busy log stays near
its pause between pages; a stalled one grows by a second each second the log has news for it; an
idle log makes nobody late. So the threshold catches a stall whatever the traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import psycopg

from projections.lag import Lag, lag, policy_lags
from projections.registry import ALL

CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 3000


@dataclass(frozen=True)
class Readiness:
    database: bool                                          # reachable within the timeouts
    pending_migrations: tuple[int, ...] = ()                # versions the code has and the database lacks
    late: tuple[Lag, ...] = field(default_factory=tuple)    # followers over the threshold

    @property
    def ready(self) -> bool:
        return self.database and not self.pending_migrations and not self.late

    def reasons(self) -> list[str]:
        """Why not ready, one line each, naming what an operator acts on; empty when ready."""
        if not self.database:
            return ["the database is unreachable"]
        found = [f"migrations not applied: {', '.join(f'{v:04d}' for v in self.pending_migrations)}"] \
            if self.pending_migrations else []
        return found + [f"{x.projection} is {x.seconds_behind:.1f} s behind ({x.events_behind} events)" for x in self.late]


def readiness(conninfo: str, migrations: Sequence[int], threshold_s: float) -> Readiness:
    """Checked on a connection of its own (a full pool must not hide a healthy database, nor a
    dead one keep a probe waiting)."""
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                             options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}") as conn:
            applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            followers = lag(conn, [p.name for p in ALL]) + policy_lags(conn)
    except psycopg.Error:
        return Readiness(database=False)
    return Readiness(True, tuple(sorted(set(migrations) - applied)),
                     tuple(x for x in followers if x.seconds_behind > threshold_s))
