"""Configuration: the environment (and an optional ``.env``), validated once, at start.

Rules:
1. Every engine setting is read from the environment variable of the same name in upper case
   (``epsilon_dau`` <- ``EPSILON_DAU``); gateway settings are listed below. The process
   environment wins over ``.env``; ``.env`` is read from the working directory only.
2. A bad value stops the process with a message naming the variable -- never a silent default.
   Numbers are never negative (``_check_numbers``; a setting where a negative means something
   says so in ``NEGATIVE_ALLOWED``), and ``DATA_DIR`` must be a writable directory
   (``prepare_data_dir``) before anything is started. ``dpdau`` turns a ``ConfigError`` into one
   line on stderr and exit code 2.
3. No setting carries a seed: the service's noise comes from OS randomness only.
   ``DEFAULT_SEED`` is read by the evaluation code (``eval/``) and by nothing here.
"""

from __future__ import annotations

import os
import tempfile
import typing
from pathlib import Path

import msgspec

from actors.settings import EngineSettings
from journal import location
from journal.backend import JournalError


class ConfigError(Exception):
    pass


MIN_SECRET_BYTES = 16  # HMAC-SHA256 keys shorter than this are guessable; identity.py enforces it too
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# Variables that were renamed: setting the old name stops the process instead of being ignored.
RENAMED = {"THETA_LG_K": "SKETCH_LG_K"}
# Settings whose negative values mean something (none so far); every other number must be >= 0.
NEGATIVE_ALLOWED: frozenset[str] = frozenset()


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./data"
    api_key: str | None = None  # every scope (gateway/auth.py)
    read_api_key: str | None = None  # releases, budget, release log, series
    ingest_api_key: str | None = None  # events, erasures
    admin_api_key: str | None = None  # revisions, other windows, maintenance, metrics (and read)
    hash_salt_secret: str | None = None
    dpdau_env: str = "development"  # "development" | "production"
    log_level: str = "info"
    max_body_bytes: int = 10 * 1024 * 1024
    max_batch_events: int = 100_000
    # Bytes of request bodies the requests being served hold at once, counted as they arrive
    # (gateway/admission.py); a body that does not fit is answered 503 + Retry-After.
    max_inflight_body_bytes: int = 32 * 1024 * 1024
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
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        if self.max_inflight_body_bytes < self.max_body_bytes:
            raise ValueError(
                f"MAX_INFLIGHT_BODY_BYTES ({self.max_inflight_body_bytes}) must be at least MAX_BODY_BYTES "
                f"({self.max_body_bytes}): a body of the largest accepted size must fit"
            )
        for setting in ("api_key", "read_api_key", "ingest_api_key", "admin_api_key"):
            key = getattr(self, setting)
            if self.production and key and len(key.encode()) < MIN_SECRET_BYTES:
                # The journal scopes idempotency keys by a 64-bit keyed hash of the API key (auth.py
                # rule 5): a short key could be confirmed from it by guessing.
                raise ValueError(
                    f"{setting.upper()} must be at least {MIN_SECRET_BYTES} bytes in production "
                    f"(got {len(key.encode())}); generate one with `openssl rand -hex 32`"
                )
        if self.hash_salt_secret is not None and len(self.hash_salt_secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"HASH_SALT_SECRET must be at least {MIN_SECRET_BYTES} bytes "
                f"(got {len(self.hash_salt_secret.encode())}); generate one with `openssl rand -hex 32`"
            )

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


def settings_structs() -> tuple[type[msgspec.Struct], ...]:
    """Every struct ``load`` fills from the environment (the README's configuration table and the
    bad-configuration tests enumerate their fields, so a new setting cannot be forgotten)."""
    return (GatewaySettings, EngineSettings)


def variables() -> dict[str, tuple[type[msgspec.Struct], str]]:
    """Environment variable name -> (struct, field) for every setting ``load`` reads."""
    return {f.upper(): (struct, f) for struct in settings_structs() for f in struct.__struct_fields__}


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
    for old, new in RENAMED.items():
        if old in env:
            raise ConfigError(f"{old} was renamed {new}: set {new} instead")
    gw = _pick(GatewaySettings, env)
    gw.update({k: str(v) for k, v in overrides.items() if v is not None})
    try:
        gateway = msgspec.convert(gw, GatewaySettings, strict=False)
        engine = msgspec.convert(_pick(EngineSettings, env), EngineSettings, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(_name_the_variable(str(exc), {**env, **{k.upper(): v for k, v in gw.items()}})) from exc
    _check_numbers(gateway)
    _check_numbers(engine)
    config = Config(gateway=gateway, engine=engine)
    try:
        config.journal  # noqa: B018 -- parse JOURNAL_URL now: a bad one stops the start (rule 2)
    except JournalError as exc:
        raise ConfigError(str(exc)) from exc
    return config


def _check_numbers(settings: msgspec.Struct) -> None:
    for name in settings.__struct_fields__:
        value = getattr(settings, name)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and value < 0 and name not in NEGATIVE_ALLOWED:
            raise ConfigError(f"{name.upper()} must be >= 0, not {value}")


def prepare_data_dir(data_dir: Path) -> None:
    """Create ``DATA_DIR`` if needed and prove it is writable, before anything starts (rule 2)."""
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"DATA_DIR {str(data_dir)!r} is a file, not a directory")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"DATA_DIR {str(data_dir)!r} is not a writable directory ({reason})") from None


SECRET_SETTINGS = frozenset(
    {"HASH_SALT_SECRET", "API_KEY", "READ_API_KEY", "INGEST_API_KEY", "ADMIN_API_KEY", "JOURNAL_URL"}
)  # never echoed in an error


def _name_the_variable(message: str, env: dict[str, str]) -> str:
    # msgspec says "... - at `$.epsilon_dau`"; users set EPSILON_DAU.
    if "`$." in message:
        head, _, field = message.rpartition("`$.")
        name = field.rstrip("`").upper()
        shown = f"={env[name]!r}" if name in env and name not in SECRET_SETTINGS else ""
        choices = _choices(name.lower())
        hint = f" (one of: {', '.join(choices)})" if choices else ""
        return f"{name}{shown}: {head.removesuffix(' - at ')}{hint}"
    return message


def _choices(field: str) -> tuple[str, ...]:
    """The allowed values of a Literal-typed setting, for the error message."""
    for struct in settings_structs():
        hints = typing.get_type_hints(struct)
        if field in hints:
            args = typing.get_args(hints[field])
            if typing.get_origin(hints[field]) is typing.Literal:
                return tuple(str(a) for a in args)
            literals = [a for a in args if typing.get_origin(a) is typing.Literal]
            return tuple(str(v) for lit in literals for v in typing.get_args(lit))
    return ()
