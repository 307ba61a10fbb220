"""Retrying the parked events of every follower (projections/parking.py) at once: what
`etsypro projections retry` does after the cause of a failure was fixed. Each follower also
retries its own on start and every minute while it runs."""

from __future__ import annotations

import psycopg

import codec
from commands.rules import Rules
from projections import parking
from projections.projector import Projector
from streams.repricing import RepricingPolicy
from streams.sink import Sink


def retry_all(conninfo: str, rules: Rules, projector_timeout: float = 30.0) -> dict[str, tuple[int, int]]:
    """follower -> (resolved now, still parked), for every follower that had parked events.
    `rules` acts for the repricing policies."""
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        followers = parking.followers_with_parked(cur)
        policies = {row[0] for row in cur.execute("SELECT policy FROM streams.policy_positions")}
    if not followers:
        return {}
    done: dict[str, tuple[int, int]] = {}
    decode = codec.to_domain_event
    projector = Projector(conninfo, decode)
    try:
        if set(followers) & set(projector.track_as.values()):
            done["projector"] = projector.retry_parked()
    finally:
        projector.close()
    policy = RepricingPolicy(rules, conninfo, projector_timeout=projector_timeout)
    try:
        for follower in followers:
            if follower in policies:
                done[follower] = policy.retry_parked(follower)
    finally:
        policy.close()
    for name in sorted({f.split("/")[0] for f in followers if "/" in f}):
        sink = Sink(conninfo, decode, name)
        try:
            done[f"sink {name}"] = sink.retry_parked()
        finally:
            sink.close()
    return done
