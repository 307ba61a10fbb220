"""`etsypro audit history|events|export`: the auditor's REST answers on the server's shell, from the
same readers (read/audit.py, read/time_travel.py), so the CLI and the API cannot disagree. The
operator reads as one tenant, with the whole tenant's view (account events included), as an
auditor holding audit:read and security:read over every shop would."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from uuid import UUID

import orjson

from api.progress import Progress
from api.settings import Settings
from commands.context import CommandContext
from domain.errors import CommandRefused, DomainError
from domain.meta import Actor, ActorKind
from read.audit import AuditReader, LogFilter
from read.side import ReadSide
from read.time_travel import TimeTravel


def read_side() -> ReadSide:
    """The read side, opening personal data with the server's keys (the current, and the previous during a rotation)."""
    from api.server import database_url, previous_secret_key, secret_key
    from commands.credentials import SUBJECT_WRAPPING, Secrets

    settings = Settings.from_env()
    reads = ReadSide(database_url(settings, log=lambda m: print(m, file=sys.stderr)), pool_size=1)
    secrets = Secrets(secret_key(settings, log=lambda m: print(m, file=sys.stderr)), previous_secret_key(settings))
    reads.audit.use_unwrap(lambda subject, wrapped: secrets.decrypt(wrapped, subject.bytes, SUBJECT_WRAPPING))
    return reads


def operator(tenant_id: str) -> AuditReader:
    return AuditReader(CommandContext(actor=Actor("cli:audit", ActorKind.SERVICE), tenant_id=tenant_id), accounts=True)


def tenant_of(reads: ReadSide, aggregate_id: UUID) -> str | None:
    """The tenant owning the aggregate: its shop's, or the account's own."""
    rows = reads.pool.rows(
        "SELECT coalesce(d.tenant_id, a.tenant_id) FROM pricing_events e"
        " JOIN event_index i ON i.notification_id = e.notification_id"
        " LEFT JOIN shop_directory d ON d.shop_id = i.shop_id LEFT JOIN accounts a ON a.account_id = e.originator_id"
        " WHERE e.originator_id = %s ORDER BY e.originator_version LIMIT 1", [aggregate_id])
    return rows[0][0] if rows else None


def history(reads: ReadSide, reader: AuditReader, aggregate_id: UUID, version: int | None = None,
            at: datetime | None = None) -> dict:
    """Every event of the aggregate (up to `version` or `at` when given, with the state then): the
    pages of GET /aggregates/{id}/history joined, and GET /aggregates/{id}/state's answer."""
    answer: dict = {"aggregate_id": str(aggregate_id)}
    if version is not None or at is not None:
        answer["state"] = TimeTravel(reads.audit, reads.aggregates).state(reader, aggregate_id, version, at)
        version = answer["state"]["version"]
    events, after = [], 0
    while True:
        page = reads.audit.aggregate_history(reader, aggregate_id, after, 1000)
        events += [e for e in page["events"] if version is None or e["version"] <= version]
        if not page["more"] or (version is not None and page["next_after_version"] >= version):
            break
        after = page["next_after_version"]
    answer["events"] = events
    return answer


def log_filter(args) -> LogFilter:
    if args.since is not None and args.until is not None and args.until <= args.since:
        raise DomainError("until", "must be after since")
    return LogFilter(tuple(args.type or ()), args.actor, args.shop, args.since, args.until)


# -- the commands --------------------------------------------------------------------------
def history_command(args) -> int:
    reads = read_side()
    try:
        tenant = args.tenant or tenant_of(reads, args.aggregate)
        if tenant is None:
            return _refused(f"aggregate {args.aggregate} not found")
        answer = history(reads, operator(tenant), args.aggregate, args.version, args.at)
    except (DomainError, CommandRefused) as e:
        return _refused(f"{e.field}: {e.detail}" if e.field else e.detail)
    finally:
        reads.close()
    print(json.dumps(answer, indent=2) if args.json else _history_text(answer))
    return 0


def events_command(args) -> int:
    reads = read_side()
    try:
        page = reads.audit.audit_events(operator(args.tenant), args.after, args.limit, log_filter(args))
    except (DomainError, CommandRefused) as e:
        return _refused(f"{e.field}: {e.detail}" if e.field else e.detail)
    finally:
        reads.close()
    if args.json:
        print(json.dumps(page, indent=2))
    else:
        print("\n".join(_event_line(e) for e in page["events"]))
        print(f"next: --after {page['next_after']}" if page["more"] else "(end of the log)", file=sys.stderr)
    return 0


def export_command(args) -> int:
    """GET /audit/export's NDJSON, byte for byte, into FILE (written whole, then renamed)."""
    if args.to is not None and args.to < args.from_:
        return _refused("to: must not be before from")
    reads, path = read_side(), Path(args.file)
    partial, written = path.with_name(path.name + ".partial"), 0
    try:
        stop, events = reads.audit.export_events(operator(args.tenant), args.from_, args.to, log_filter(args))
        with open(partial, "wb") as out, Progress("exporting", unit="positions") as progress:
            for event in events:
                out.write(orjson.dumps(event) + b"\n")
                written += 1
                progress.update(event["position"] - args.from_ + 1, max(stop - args.from_ + 1, 0))
        partial.replace(path)
    except (DomainError, CommandRefused) as e:
        partial.unlink(missing_ok=True)
        return _refused(f"{e.field}: {e.detail}" if e.field else e.detail)
    finally:
        reads.close()
    print(f"exported {written:,} events of tenant {args.tenant}, positions {args.from_:,} to {stop:,}, to {path}")
    return 0


def _refused(message: str) -> int:
    print(f"refused: {message}", file=sys.stderr)
    return 1


def _event_line(e: dict) -> str:
    meta = e.get("meta") or {}
    return (f"#{e['position']} {e['recorded_at']} {e['type']} v{e['version']} of {e['aggregate_id']}"
            f" by {meta.get('actor_id', '-')}: {json.dumps(e['data'], sort_keys=True)}")


def _history_text(answer: dict) -> str:
    lines = [_event_line(e) for e in answer["events"]]
    if "state" in answer:
        state = answer["state"]
        lines.append(f"{state['type']} {state['aggregate_id']} at version {state['version']} of"
                     f" {state['latest_version']} (recorded {state['recorded_at']}):")
        lines.append(json.dumps(state["state"], indent=2, sort_keys=True))
    return "\n".join(lines)


# -- arguments -----------------------------------------------------------------------------
def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("an ISO 8601 time, e.g. 2026-12-07T14:05:00+00:00") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("must include a timezone offset, e.g. +00:00")
    return moment


def _whole(least: int, most: int = 2**63 - 1):
    def parse(text: str) -> int:
        if not text.isdigit() or not least <= int(text) <= most:
            raise argparse.ArgumentTypeError(f"a whole number from {least} to {most}")
        return int(text)
    return parse


def _filters(p: argparse.ArgumentParser) -> None:
    from api.cli import _tenant

    p.add_argument("--tenant", required=True, type=_tenant, help="whose log (the REST routes answer the caller's tenant)")
    p.add_argument("--type", action="append", help="event type, e.g. Listing.PriceChanged; repeatable")
    p.add_argument("--actor", help="actor id")
    p.add_argument("--shop", type=UUID, help="one shop of the tenant")
    p.add_argument("--since", type=_moment, help="recorded at or after (ISO 8601 with offset)")
    p.add_argument("--until", type=_moment, help="recorded before (ISO 8601 with offset)")


def add_parsers(audits) -> None:
    """history, events and export beside `audit verify` (api/cli.py registers them)."""
    from api.cli import _tenant

    h = audits.add_parser("history", help="one aggregate's events (any kind), and its state at a version or moment")
    h.add_argument("aggregate", type=UUID)
    when = h.add_mutually_exclusive_group()
    when.add_argument("--version", type=_whole(1), help="the state at this version (and the events up to it)")
    when.add_argument("--at", type=_moment, help="the state at this moment of recorded time (ISO 8601 with offset)")
    h.add_argument("--tenant", type=_tenant, help="refuse unless the aggregate is this tenant's (default: its own)")
    h.add_argument("--json", action="store_true", help="the JSON the API answers, instead of text")
    h.set_defaults(func=history_command)
    e = audits.add_parser("events", help="a page of a tenant's events in commit order (GET /audit/events)")
    _filters(e)
    e.add_argument("--after", type=_whole(0), default=0, help="position to start after (the previous page's next_after)")
    e.add_argument("--limit", type=_whole(1, 1000), default=100, help="events per page, 1-1000 (default 100)")
    e.add_argument("--json", action="store_true", help="the JSON the API answers, instead of text")
    e.set_defaults(func=events_command)
    x = audits.add_parser("export", help="a tenant's events from one position to another as NDJSON (GET /audit/export)")
    _filters(x)
    x.add_argument("--from", dest="from_", type=_whole(1), default=1, help="first position (default 1)")
    x.add_argument("--to", type=_whole(1), help="last position, inclusive (default: the log's head now)")
    x.add_argument("file")
    x.set_defaults(func=export_command)
