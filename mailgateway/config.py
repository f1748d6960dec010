"""config.toml, read once into frozen dataclasses.

Each section is a dataclass; its fields are the keys admins may write, with their
types and defaults. One generic walker checks the file against them, so an unknown
key, a wrong type or a bad value stops start-up with one line naming file and key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mailgateway.errors import ConfigError

ADDRESS = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+$")
DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", re.IGNORECASE)


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else f"{value} is out of range (0-65535)"


def _positive(value: int | float) -> str | None:
    return None if value > 0 else f"{value} must be greater than 0"


def _address(value: str) -> str | None:
    return None if ADDRESS.match(value) else f"{value!r} is not an email address"


def _addresses(values: list[str]) -> str | None:
    return next((_address(v) for v in values if _address(v)), None)


def _domains(values: list[str]) -> str | None:
    bad = [v for v in values if not DOMAIN.match(v)]
    return f"{bad[0]!r} is not a domain name" if bad else None


def _optional_address(value: str) -> str | None:
    return _address(value) if value else None


def _tag(value: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", value) else (
        f"{value!r} must be 1-32 letters, digits, '.', '_' or '-'"
    )


def check(fn: typing.Callable[[Any], str | None]) -> dict[str, Any]:
    return {"check": fn}


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:///var/mailgateway.db"
    busy_timeout_ms: int = field(default=30_000, metadata=check(_positive))  # SQLite: wait
    # this long for the write lock before a writer gives up (SMTP answers 451, a pipe 75)


@dataclass(frozen=True)
class StorageSettings:
    path: Path = Path("var/store")


@dataclass(frozen=True)
class SmtpSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = field(default=2525, metadata=check(_port))
    domains: list[str] = field(default_factory=lambda: ["example.com"], metadata=check(_domains))
    addresses: list[str] = field(default_factory=list, metadata=check(_addresses))
    max_message_size: int = field(default=26214400, metadata=check(_positive))
    tls_cert: Path | None = None
    tls_key: Path | None = None
    require_tls: bool = False
    auth_user: str = ""
    auth_password_env: str = ""
    lmtp: bool = False
    batch_size: int = field(default=64, metadata=check(_positive))
    batch_wait_ms: int = 0  # 0: mail that arrived while the last commit ran forms the next
    ingest_process: bool = True  # parse and store in a worker process: a core of its own


@dataclass(frozen=True)
class ImapAccount:
    name: str = "support"
    enabled: bool = True
    host: str = "imap.example.com"
    port: int = field(default=993, metadata=check(_port))
    tls: bool = True
    starttls: bool = False
    ca_file: Path | None = None
    user: str = ""
    auth: Literal["password", "xoauth2"] = "password"
    password_env: str = ""
    token_command: str = ""
    oauth_token_url: str = ""
    oauth_client_id: str = ""
    oauth_client_secret_env: str = ""
    oauth_refresh_token_env: str = ""
    folder: str = "INBOX"
    processed_folder: str = ""
    idle: bool = True
    idle_timeout: int = field(default=300, metadata=check(_positive))  # see config.toml
    poll_interval: int = field(default=60, metadata=check(_positive))


@dataclass(frozen=True)
class OutboundSettings:
    transport: Literal["smtp", "directory"] = "directory"
    path: Path = Path("var/sent")
    host: str = "127.0.0.1"
    port: int = field(default=25, metadata=check(_port))
    tls: Literal["none", "starttls", "implicit"] = "none"
    ca_file: Path | None = None
    user: str = ""
    password_env: str = ""
    from_name: str = "Support"
    bounce_address: str = field(default="", metadata=check(_optional_address))
    timeout: int = field(default=30, metadata=check(_positive))
    max_attempts: int = field(default=8, metadata=check(_positive))
    retry_delay: int = field(default=60, metadata=check(_positive))
    lease: int = field(default=300, metadata=check(_positive))


@dataclass(frozen=True)
class WebSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata=check(_port))
    base_url: str = ""
    secret_key_env: str = "MAILGATEWAY_SECRET_KEY"
    threads: int = field(default=8, metadata=check(_positive))


@dataclass(frozen=True)
class TicketSettings:
    tag: str = field(default="ACME", metadata=check(_tag))
    statuses: list[str] = field(
        default_factory=lambda: ["new", "open", "pending", "solved", "closed"]
    )
    priorities: list[str] = field(default_factory=lambda: ["low", "normal", "high", "urgent"])
    default_priority: str = "normal"


@dataclass(frozen=True)
class QueueSettings:
    name: str = "Support"
    address: str = field(default="support@example.com", metadata=check(_address))
    default: bool = False
    acknowledge: bool = True


@dataclass(frozen=True)
class LimitSettings:
    max_attachments: int = field(default=100, metadata=check(_positive))
    max_attachment_size: int = field(default=26214400, metadata=check(_positive))
    max_mime_depth: int = field(default=20, metadata=check(_positive))
    max_text_chars: int = field(default=1_000_000, metadata=check(_positive))


@dataclass(frozen=True)
class AcknowledgementSettings:
    enabled: bool = True
    max_per_sender_per_hour: int = field(default=3, metadata=check(_positive))
    noreply_patterns: list[str] = field(
        default_factory=lambda: ["noreply@*", "no-reply@*", "donotreply@*", "*@noreply.*"]
    )
    bounce_suppress_days: int = 7


@dataclass(frozen=True)
class NotificationSettings:
    new_ticket: bool = True
    assigned: bool = True
    customer_reply: bool = True


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    imap: list[ImapAccount] = field(default_factory=list)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    web: WebSettings = field(default_factory=WebSettings)
    tickets: TicketSettings = field(default_factory=TicketSettings)
    queues: list[QueueSettings] = field(default_factory=lambda: [QueueSettings(default=True)])
    limits: LimitSettings = field(default_factory=LimitSettings)
    acknowledgement: AcknowledgementSettings = field(default_factory=AcknowledgementSettings)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    path: Path = field(default=Path("config.toml"), metadata={"internal": True})
    secret_key: str = field(default="", repr=False, metadata={"internal": True})

    @property
    def default_queue(self) -> QueueSettings:
        return next((q for q in self.queues if q.default), self.queues[0])

    @property
    def our_addresses(self) -> frozenset[str]:
        """Addresses that are us: mail From them is our own and never answered."""
        found = {q.address.lower() for q in self.queues} | {a.lower() for a in self.smtp.addresses}
        if self.outbound.bounce_address:
            found.add(self.outbound.bounce_address.lower())
        return frozenset(found)


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read and check config.toml; ConfigError names the file and the key on any fault."""
    path = Path(path).resolve()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    settings = _build(Settings, data, "", path)
    settings = _resolve_paths(settings, path.parent)
    _check_whole(settings, path)
    return dataclasses.replace(settings, path=path, secret_key=_secret_key(settings, path))


def _build(cls: type, data: Any, where: str, file: Path) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: [{where}] must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    values = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in known:
            raise ConfigError(f"{file}: unknown key {_label(name)}")
        values[key] = _convert(hints[key], value, name, file)
        problem = known[key].metadata.get("check", lambda _: None)(values[key])
        if problem:
            raise ConfigError(f"{file}: {_label(name)}: {problem}")
    return cls(**values)


def _convert(hint: Any, value: Any, name: str, file: Path) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, name, file)
    if origin in (typing.Union, types.UnionType):  # X | None: None is never written in TOML
        return _convert(next(a for a in args if a is not type(None)), value, name, file)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{file}: {_label(name)} must be a list")
        return [_convert(args[0], item, name, file) for item in value]
    if origin is Literal:
        if value not in args:
            choices = " | ".join(map(str, args))
            raise ConfigError(f"{file}: {_label(name)}: {value!r} is not one of {choices}")
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{file}: {_label(name)} must be a path (string)")
        return Path(value) if value else None
    wanted = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}[hint]
    if not isinstance(value, wanted) or (hint is not bool and isinstance(value, bool)):
        raise ConfigError(
            f"{file}: {_label(name)} must be {hint.__name__}, not {type(value).__name__}"
        )
    return value


def _label(name: str) -> str:
    section, _, key = name.rpartition(".")
    return f"[{section}] {key}" if section else key


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    """Relative paths, including a SQLite file, are relative to the config file's folder."""

    def absolute(p: Path | None) -> Path | None:
        return None if p is None else (base / p).resolve()

    url = settings.database.url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rest = url.removeprefix("sqlite:///")
        if rest and not rest.startswith(":memory:"):
            url = f"sqlite:///{(base / rest).resolve()}"
    return dataclasses.replace(
        settings,
        database=dataclasses.replace(settings.database, url=url),
        storage=StorageSettings(path=absolute(settings.storage.path)),
        smtp=dataclasses.replace(
            settings.smtp, tls_cert=absolute(settings.smtp.tls_cert),
            tls_key=absolute(settings.smtp.tls_key),
        ),
        imap=[dataclasses.replace(a, ca_file=absolute(a.ca_file)) for a in settings.imap],
        outbound=dataclasses.replace(
            settings.outbound, path=absolute(settings.outbound.path),
            ca_file=absolute(settings.outbound.ca_file),
        ),
    )


def _check_whole(settings: Settings, file: Path) -> None:
    """Rules that span keys: files that must exist, one default queue, unique names."""
    for key, value in (("[smtp] tls_cert", settings.smtp.tls_cert),
                       ("[smtp] tls_key", settings.smtp.tls_key),
                       ("[outbound] ca_file", settings.outbound.ca_file),
                       *((f"[imap] ca_file ({a.name})", a.ca_file) for a in settings.imap)):
        if value is not None and not value.is_file():
            raise ConfigError(f"{file}: {key}: no such file {value}")
    if bool(settings.smtp.tls_cert) != bool(settings.smtp.tls_key):
        raise ConfigError(f"{file}: [smtp] tls_cert and tls_key must be given together")
    if not settings.queues:
        raise ConfigError(f"{file}: [[queues]] needs at least one queue")
    if sum(q.default for q in settings.queues) > 1:
        raise ConfigError(f"{file}: [queues] default: only one queue may be the default")
    for label, names in (("[queues] name", [q.name for q in settings.queues]),
                         ("[imap] name", [a.name for a in settings.imap])):
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"{file}: {label}: {sorted(dupes)[0]!r} is used twice")
    if settings.tickets.default_priority not in settings.tickets.priorities:
        raise ConfigError(f"{file}: [tickets] default_priority: not one of [tickets] priorities")
    for account in settings.imap:
        if account.enabled and account.auth == "xoauth2" and not (
            account.token_command or account.oauth_token_url
        ):
            raise ConfigError(
                f"{file}: [imap] auth: account {account.name!r} uses xoauth2 but sets neither "
                "token_command nor oauth_token_url"
            )
    if settings.outbound.transport == "smtp" and settings.outbound.port == 0:
        raise ConfigError(f"{file}: [outbound] port: 0 is not a relay port")


def _secret_key(settings: Settings, file: Path) -> str:
    """From the environment variable the file names; else generated once and kept under var/."""
    name = settings.web.secret_key_env
    if name and os.environ.get(name):
        return os.environ[name]
    keyfile = file.parent / "var" / "secret_key"
    try:
        return keyfile.read_text().strip()
    except FileNotFoundError:
        keyfile.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key)
        return key
    except OSError as error:
        raise ConfigError(f"{file}: [web] secret_key_env: {name} is unset and {error}") from None


def secret_from_env(variable: str, what: str) -> str:
    """A secret the config names by environment variable; clear error when it is missing."""
    if not variable:
        return ""
    value = os.environ.get(variable)
    if value is None:
        raise ConfigError(f"{what}: environment variable {variable} is not set")
    return value
