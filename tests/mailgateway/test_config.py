"""config.toml: the sample loads; each kind of fault gives one line naming file and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailgateway.config import load_settings
from mailgateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = (ROOT / "config.toml").read_text()


def test_sample_config_loads_with_documented_defaults(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(SAMPLE)
    s = load_settings(tmp_path / "config.toml")
    assert s.smtp.host == "127.0.0.1" and s.smtp.port == 2525
    assert s.outbound.transport == "directory"
    assert [a.enabled for a in s.imap] == [False]
    assert s.database.url == f"sqlite:///{tmp_path}/var/mailgateway.db"
    assert s.storage.path == tmp_path / "var" / "store"
    assert s.default_queue.address == "support@example.com"
    assert len(s.secret_key) > 30 and (tmp_path / "var" / "secret_key").exists()
    assert load_settings(tmp_path / "config.toml").secret_key == s.secret_key


def test_every_sample_key_has_a_comment() -> None:
    for line in SAMPLE.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"undocumented key: {line}"


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("port = 2525", "port = 99999999", "[smtp] port: 99999999 is out of range"),
    ("port = 2525", 'port = "25"', "[smtp] port must be int, not str"),
    ("enabled = true                            # start", "enabled = 1 # start",
     "[smtp] enabled must be bool, not int"),
    ('address = "support@example.com"', 'address = "support"',
     "[queues] address: 'support' is not an email address"),
    ('tls = "none"', 'tls = "sometimes"', "[outbound] tls: 'sometimes' is not one of"),
    ('tls_cert = ""', 'tls_cert = "missing.pem"', "[smtp] tls_cert: no such file"),
    ("[database]", "[database]\nbogus_key = 1", "unknown key [database] bogus_key"),
    ("[limits]", "[limits]\n[nonsense]", "unknown key nonsense"),
    ('tag = "ACME"', 'tag = "AC ME"', "[tickets] tag: 'AC ME' must be"),
    ('domains = ["example.com"]', 'domains = ["exa mple"]', "[smtp] domains: 'exa mple'"),
    ("default = true", "default = true\n\n[[queues]]\nname = \"B\"\naddress = \"b@example.com\"\n"
     "default = true", "only one queue may be the default"),
    ("url = ", "url = = ", "not valid TOML"),
])
def test_bad_config_gives_one_line_naming_the_key(tmp_path: Path, old: str, new: str,
                                                  expected: str) -> None:
    assert old in SAMPLE
    path = tmp_path / "config.toml"
    path.write_text(SAMPLE.replace(old, new, 1))
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    message = str(error.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "nope.toml")


def test_secret_from_environment_wins(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "config.toml").write_text(SAMPLE)
    monkeypatch.setenv("MAILGATEWAY_SECRET_KEY", "from-the-environment")
    assert load_settings(tmp_path / "config.toml").secret_key == "from-the-environment"


def test_cli_prints_one_line_and_exit_78_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(SAMPLE.replace("port = 2525", "port = 70000"))
    result = subprocess.run([sys.executable, "-m", "mailgateway", "--config", str(path),
                             "check-config"], capture_output=True, text=True)
    assert result.returncode == 78
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"mailgateway: {path}: [smtp] port: 70000 is out of range (0-65535)"]
