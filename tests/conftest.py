"""Shared fixtures: every database test runs on a real SQLite file and, when
MAILGATEWAY_TEST_POSTGRES_URL is set, on PostgreSQL in a schema of its own."""

from __future__ import annotations

import json
import os
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from mailgateway.config import Settings, load_settings
from mailgateway.runtime import Runtime, open_runtime

# the Dovecot and IMAP gateway fixtures of the IMAP tests
pytest_plugins = ["tests.dovecot"]

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("MAILGATEWAY_TEST_POSTGRES_URL", "")
DATABASES = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


def toml_dump(data: dict, prefix: str = "") -> str:
    """Enough TOML for test configs: scalars, lists, tables and arrays of tables."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict) or (
            isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
        ):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    out = "\n".join(lines) + "\n"
    for key, value in tables:
        name = f"{prefix}{key}"
        for item in value if isinstance(value, list) else [value]:
            header = f"[[{name}]]" if isinstance(value, list) else f"[{name}]"
            out += f"\n{header}\n" + toml_dump(item, name + ".")
    return out


def sample_config() -> dict:
    return tomllib.loads((ROOT / "config.toml").read_text())


@pytest.fixture(scope="session")
def postgres_admin():
    if not POSTGRES_URL:
        yield None
        return
    engine = create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1),
                           isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@contextmanager
def fresh_database(kind: str, folder: Path, postgres_admin) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{folder}/test.db"
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with postgres_admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    base = POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}options=-csearch_path%3D{schema}"
    with postgres_admin.connect() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path: Path, postgres_admin) -> Iterator[str]:
    with fresh_database(request.param, tmp_path, postgres_admin) as url:
        yield url


@pytest.fixture(scope="module", params=DATABASES)
def module_database_url(request, tmp_path_factory, postgres_admin) -> Iterator[str]:
    """The same, shared by the tests of one module (a server they all talk to)."""
    with fresh_database(request.param, tmp_path_factory.mktemp("db"), postgres_admin) as url:
        yield url


def write_config(folder: Path, database_url: str, **sections: dict) -> Path:
    """A config.toml under folder: the sample with a test database, no IMAP, and overrides."""
    data = sample_config()
    data["database"] = {"url": database_url}
    data.pop("imap", None)
    data["web"]["secret_key_env"] = "MAILGATEWAY_TEST_SECRET"
    data["smtp"]["port"] = 0
    for name, values in sections.items():
        if isinstance(values, list):
            data[name] = values
        else:
            data.setdefault(name, {}).update(values)
    path = folder / "config.toml"
    path.write_text(toml_dump(data))
    return path


@pytest.fixture(autouse=True)
def _secret(monkeypatch) -> None:
    monkeypatch.setenv("MAILGATEWAY_TEST_SECRET", "test-secret-key-0123456789")


@pytest.fixture
def config_path(tmp_path: Path, database_url: str) -> Path:
    return write_config(tmp_path, database_url)


@pytest.fixture
def settings(config_path: Path) -> Settings:
    return load_settings(config_path)


@contextmanager
def prepared_runtime(settings: Settings) -> Iterator[Runtime]:
    """An initialised instance: schema at head, queues synced; closed afterwards."""
    from mailgateway.cli_setup import prepare_database

    runtime = open_runtime(settings)
    prepare_database(runtime)
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    with prepared_runtime(settings) as runtime:
        yield runtime
