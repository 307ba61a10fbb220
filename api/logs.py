"""Logs: one JSON line per record for machines (ETSYPRO_LOG_FORMAT=json), or a readable line for
terminals (human); never a secret.

What is logged is chosen, not dumped: a request line names its method, route template, status,
duration, tenant, correlation id and command (Idempotency-Key), never a header, body or query
string. As a second guard every line passes `redact`, which masks anything shaped like a
credential this server issues (bearer tokens, refresh tokens, API keys, MFA challenges) and the
value of any field whose name says secret. tests/test_logs.py scans the logs of the auth flows.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from datetime import datetime, timezone

import orjson

REQUEST_LOGGER = "etsypro.request"
EVENT_LOGGER = "etsypro.event"
# Field names whose values never reach a log, whatever they hold.
SECRET_NAMES = re.compile(r"pass|secret|token|totp|code|authorization|cookie|key$|credential", re.IGNORECASE)
# Credentials by shape: JWTs, our prefixed tokens (commands/credentials.py new_token), bearer values.
SECRET_SHAPES = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*|\b(?:rt|ek|mfa|pr)_[\w-]{16,}|(?i:bearer)\s+\S+")
MASK = "[redacted]"
# The LogRecord attributes every record has: whatever else a record carries came in `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName",
                                                                               "color_message"}  # uvicorn's


# Every SECRET_SHAPES match contains one of these, lowercased: lines without any (nearly all) skip the regex.
_SHAPE_HINTS = ("eyj", "rt_", "ek_", "mfa_", "pr_", "bearer")


def redact(text: str) -> str:
    lowered = text.lower()
    if not any(hint in lowered for hint in _SHAPE_HINTS):
        return text
    return SECRET_SHAPES.sub(MASK, text)


@functools.lru_cache(maxsize=1024)
def _secret_named(name: str) -> bool:
    return SECRET_NAMES.search(name) is not None


def fields_of(record: logging.LogRecord) -> dict:
    """The record's extra fields, with secret-named ones masked."""
    return {name: (MASK if _secret_named(name) else value)
            for name, value in vars(record).items() if value is not None and name not in _STANDARD}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": _timestamp(record), "level": record.levelname, "logger": record.name,
                "msg": record.getMessage(), **fields_of(record)}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(line, default=str).decode())


class HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{name}={value}" for name, value in fields_of(record).items())
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        line = f"{line} {extra}" if extra else line
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return redact(line)


FORMATTERS = {"json": JsonFormatter, "human": HumanFormatter}


def configure(log_format: str = "human", level: int = logging.INFO, stream=None) -> logging.Handler:
    """One handler on the root logger, in the chosen format; uvicorn's loggers write through it too."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(FORMATTERS[log_format]())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "etsypro", False)]:
        root.removeHandler(old)
    handler.etsypro = True
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")  # api/observability.py writes the request lines instead
    access.handlers.clear()
    access.propagate = False
    return handler


def emit(logger: logging.Logger, level: int, message: str, fields: dict) -> None:
    """A record of `fields`, without the caller lookup (a walk up the stack) that logger.info does."""
    if logger.isEnabledFor(level):
        logger.handle(logger.makeRecord(logger.name, level, "", 0, message, None, None, extra=fields))


request_log = logging.getLogger(REQUEST_LOGGER)
event_log = logging.getLogger(EVENT_LOGGER)

# Events worth a line of their own (besides the request that caused them): security and rollbacks.
NOTABLE = re.compile(r"^Account\.(Locked|Unlocked|LoginFailed|PasswordChanged|Mfa\w+|ApiKey\w+|RoleGranted|RoleRevoked|"
                     r"TokenFamilyRevoked)$|RolledBack|Rollback")


def log_notable_events(events) -> None:
    """The engine's on_commit listener: one line per notable event, with who and why, no payload."""
    for event in events:
        name = type(event).__qualname__
        if not NOTABLE.search(name):
            continue
        meta = getattr(event, "meta", None)
        event_log.info("event %s", name, extra={
            "event": name, "aggregate_id": str(event.originator_id), "version": event.originator_version,
            "shop": getattr(meta, "shop_id", None), "actor": getattr(meta, "actor_id", None),
            "correlation_id": getattr(meta, "correlation_id", None), "causation_id": getattr(meta, "causation_id", None),
            "command_id": getattr(meta, "command_id", None)})
