"""Settings, all from environment variables (documented in README.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    database_url: str | None  # ETSYPRO_DATABASE_URL; unset = embedded PostgreSQL
    data_dir: Path            # ETSYPRO_DATA_DIR: where the embedded PostgreSQL keeps its files
    host: str                 # ETSYPRO_HOST
    port: int                 # ETSYPRO_PORT
    pool_size: int            # ETSYPRO_POOL_SIZE: database connections per process
    max_body_bytes: int       # ETSYPRO_MAX_BODY_BYTES: larger request bodies get 413
    secret_key: str | None = None   # ETSYPRO_SECRET_KEY (32+ chars): signs tokens, encrypts TOTP secrets;
                                    # unset = a key file created once in ETSYPRO_DATA_DIR
    access_token_minutes: int = 10  # ETSYPRO_ACCESS_TOKEN_MINUTES
    login_per_minute: int = 10      # ETSYPRO_LOGIN_PER_MINUTE: login attempts per client address
    projector: str = "inprocess"    # ETSYPRO_PROJECTOR: inprocess (serve runs the projector) | off
    repricing: str = "inprocess"    # ETSYPRO_REPRICING: inprocess (serve runs the repricing policy) | off
    follow_pause_ms: int = 50       # ETSYPRO_FOLLOW_PAUSE_MS: the in-process followers' pause between
                                    # partial pages (projections.projector.follow_log); 0: none
    principal_cache_ms: int = 1000  # ETSYPRO_PRINCIPAL_CACHE_MS: see api/auth.py PrincipalCache; 0: none
    trusted_proxies: str = ""       # ETSYPRO_TRUSTED_PROXIES: addresses/networks of the proxies in front, whose
                                    # X-Forwarded-For gives the client's address; empty: none is believed
    redis_url: str | None = None    # ETSYPRO_REDIS_URL: where rate limits count, shared by every worker;
                                    # unset: each process counts in its own memory
    access_log: bool = False        # ETSYPRO_ACCESS_LOG: off | on (uvicorn's line per request, ~10% of a
                                    # price change's server CPU; the proxy in front usually logs requests)

    @property
    def follow_pause_s(self) -> float:
        """The followers' pause in seconds, as Projector and RepricingPolicy take it."""
        return self.follow_pause_ms / 1000

    @classmethod
    def from_env(cls, env=os.environ) -> Settings:
        return cls(
            database_url=env.get("ETSYPRO_DATABASE_URL") or None,
            data_dir=Path(env.get("ETSYPRO_DATA_DIR", Path.cwd() / ".etsypro")),
            host=env.get("ETSYPRO_HOST", "127.0.0.1"),
            port=int(env.get("ETSYPRO_PORT", "8000")),
            pool_size=int(env.get("ETSYPRO_POOL_SIZE", "10")),
            max_body_bytes=int(env.get("ETSYPRO_MAX_BODY_BYTES", str(8 * 1024 * 1024))),
            secret_key=env.get("ETSYPRO_SECRET_KEY") or None,
            access_token_minutes=int(env.get("ETSYPRO_ACCESS_TOKEN_MINUTES", "10")),
            login_per_minute=int(env.get("ETSYPRO_LOGIN_PER_MINUTE", "10")),
            projector=_choice(env, "ETSYPRO_PROJECTOR", ("inprocess", "off")),
            repricing=_choice(env, "ETSYPRO_REPRICING", ("inprocess", "off")),
            follow_pause_ms=int(env.get("ETSYPRO_FOLLOW_PAUSE_MS", "50")),
            principal_cache_ms=int(env.get("ETSYPRO_PRINCIPAL_CACHE_MS", "1000")),
            trusted_proxies=env.get("ETSYPRO_TRUSTED_PROXIES", ""),
            redis_url=env.get("ETSYPRO_REDIS_URL") or None,
            access_log=_choice(env, "ETSYPRO_ACCESS_LOG", ("off", "on")) == "on",
        )


def _choice(env, name: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, allowed[0])
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value
