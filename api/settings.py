"""Settings, all from ETSYPRO_* environment variables (documented in README.md)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # extra="ignore": ETSYPRO_* variables read elsewhere (Kafka, tests) are not ours to refuse.
    model_config = SettingsConfigDict(env_prefix="ETSYPRO_", env_ignore_empty=True, frozen=True, extra="ignore")

    database_url: str | None = None  # unset: embedded PostgreSQL
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / ".etsypro")  # the embedded PostgreSQL's files
    host: str = "127.0.0.1"
    port: int = 8000
    pool_size: int = 10             # database connections per process
    max_body_bytes: int = 8 * 1024 * 1024  # larger request bodies get 413
    secret_key: str | None = None   # 32+ chars; unset: a key file created once in data_dir
    secret_key_previous: str | None = None  # the key being retired during a rotation (docs/operations.md)
    access_token_minutes: int = 10
    login_per_minute: int = 10      # login attempts per client address
    projector: Literal["inprocess", "off"] = "inprocess"  # off: `etsypro project` runs it instead
    repricing: Literal["inprocess", "off"] = "inprocess"  # off: `etsypro reprice` runs it instead
    follow_pause_ms: int = 50       # the in-process followers' pause after a partial page; 0: none
    principal_cache_ms: int = 1000  # see api/auth.py PrincipalCache; 0: none
    trusted_proxies: str = ""       # the proxies whose X-Forwarded-For names the client; empty: none
    redis_url: str | None = None    # where rate limits count, shared by every worker; unset: per process
    access_log: bool = False        # on | off: the proxy in front usually logs requests already
    log_format: Literal["human", "json"] = "human"  # json: one JSON object per line (api/logs.py)
    metrics: bool = True            # on | off: count into GET /metrics (api/metrics.py)
    metrics_token: str | None = None  # scrapers send it as a bearer token; unset: loopback clients only
    ready_lag_seconds: float = Field(30.0, gt=0, allow_inf_nan=False)  # /health/ready fails past this follower lag
    checkpoint_key: Path | None = None  # Ed25519 private key file: serve publishes signed chain heads (api/checkpoints.py)
    checkpoint_dir: Path | None = None  # where they go; unset: data_dir/checkpoints
    checkpoint_minutes: float = Field(60.0, gt=0, allow_inf_nan=False)  # how often
    rollback_guard_every_minutes: float = Field(60.0, ge=0, le=10080, allow_inf_nan=False)  # serve runs the guard; 0: never
    analyze_every_hours: float = Field(24.0, ge=0, le=8784, allow_inf_nan=False)  # serve refits the demand models; 0: never

    @field_validator("access_log", "metrics", mode="before")
    @classmethod
    def _on_or_off(cls, value):
        if isinstance(value, str) and value not in ("on", "off"):
            raise ValueError("should be 'on' or 'off'")
        return value == "on" if isinstance(value, str) else value

    @property
    def follow_pause_s(self) -> float:
        """The followers' pause in seconds, as Projector and RepricingPolicy take it."""
        return self.follow_pause_ms / 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from the process's environment, or from `env` alone when given."""
        prefix = cls.model_config["env_prefix"]
        try:
            if env is None:
                return cls()
            return cls.model_validate({name[len(prefix):].lower(): value for name, value in env.items()
                                       if name.startswith(prefix) and value})
        except ValidationError as e:  # name the variables, as whoever set them knows them
            raise ValueError("; ".join(f"{prefix}{str(error['loc'][0]).upper()}: {error['msg']}, not {error['input']!r}"
                                       for error in e.errors())) from None
