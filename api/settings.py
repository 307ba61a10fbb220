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

    @classmethod
    def from_env(cls, env=os.environ) -> Settings:
        return cls(
            database_url=env.get("ETSYPRO_DATABASE_URL") or None,
            data_dir=Path(env.get("ETSYPRO_DATA_DIR", Path.cwd() / ".etsypro")),
            host=env.get("ETSYPRO_HOST", "127.0.0.1"),
            port=int(env.get("ETSYPRO_PORT", "8000")),
            pool_size=int(env.get("ETSYPRO_POOL_SIZE", "10")),
            max_body_bytes=int(env.get("ETSYPRO_MAX_BODY_BYTES", str(8 * 1024 * 1024))),
        )
