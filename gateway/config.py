"""Configuration: the environment (and an optional ``.env``), validated once, at start.

Rules:
1. Every engine setting is read from the environment variable of the same name in upper case
   (``epsilon_dau`` <- ``EPSILON_DAU``); gateway settings are listed below. The process
   environment wins over ``.env``; ``.env`` is read from the working directory only.
2. A bad value stops the process with a message naming the variable -- never a silent default.
3. No setting carries a seed: the service's noise comes from OS randomness only.
   ``DEFAULT_SEED`` is read by the evaluation code (``eval/``) and by nothing here.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from actors.settings import EngineSettings
from journal import location
from journal.backend import JournalError


class ConfigError(Exception):
    pass


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./data"
    api_key: str | None = None
    hash_salt_secret: str | None = None
    dpdau_env: str = "development"  # "development" | "production"
    log_level: str = "info"
    max_body_bytes: int = 10 * 1024 * 1024
    max_batch_events: int = 100_000
    max_user_id_chars: int = 256
    max_metadata_bytes: int = 4096
    future_days_allowed: int = 1
    journal_url: str = ""  # "" = sqlite:///DATA_DIR/journal.sqlite3 (journal/location.py)
    journal_sync: str = "FULL"  # SQLite only: PRAGMA synchronous
    index_every_events: int = 262_144  # SQLite only: pseudonym index build step
    index_idle_seconds: float = 2.0
    pseudonym_cache: int = 1_000_000

    def __post_init__(self) -> None:
        if self.dpdau_env not in ("development", "production"):
            raise ValueError("DPDAU_ENV must be 'development' or 'production'")
        if self.journal_sync.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("JOURNAL_SYNC must be FULL, NORMAL or EXTRA")
        if not 0 < self.port < 65536:
            raise ValueError("PORT must be a TCP port")

    @property
    def production(self) -> bool:
        return self.dpdau_env == "production"


class Config(msgspec.Struct, frozen=True, kw_only=True):
    gateway: GatewaySettings
    engine: EngineSettings

    @property
    def data_dir(self) -> Path:
        return Path(self.gateway.data_dir)

    @property
    def journal(self) -> location.JournalSpec:
        """Where the journal lives (``JOURNAL_URL``); validated by ``load``."""
        gw = self.gateway
        return location.parse(
            gw.journal_url,
            self.data_dir,
            sqlite_synchronous=gw.journal_sync.upper(),
            index_every_events=gw.index_every_events,
            index_idle_seconds=gw.index_idle_seconds,
            production=gw.production,
        )


def read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        values[name.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def _pick(struct: type[msgspec.Struct], env: dict[str, str]) -> dict[str, str]:
    return {f: env[f.upper()] for f in struct.__struct_fields__ if f.upper() in env and env[f.upper()] != ""}


def load(environ: dict[str, str] | None = None, dotenv: Path | None = Path(".env"), **overrides: object) -> Config:
    """Build the config from ``.env`` < environment < keyword overrides (CLI flags)."""
    env = read_dotenv(dotenv) if dotenv is not None else {}
    env.update(os.environ if environ is None else environ)
    gw = _pick(GatewaySettings, env)
    gw.update({k: str(v) for k, v in overrides.items() if v is not None})
    try:
        gateway = msgspec.convert(gw, GatewaySettings, strict=False)
        engine = msgspec.convert(_pick(EngineSettings, env), EngineSettings, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(_name_the_variable(str(exc))) from exc
    config = Config(gateway=gateway, engine=engine)
    try:
        config.journal  # noqa: B018 -- parse JOURNAL_URL now: a bad one stops the start (rule 2)
    except JournalError as exc:
        raise ConfigError(str(exc)) from exc
    return config


def _name_the_variable(message: str) -> str:
    # msgspec says "... - at `$.epsilon_dau`"; users set EPSILON_DAU.
    if "`$." in message:
        head, _, field = message.rpartition("`$.")
        return f"{field.rstrip('`').upper()}: {head.rstrip(' -at')}"
    return message
