"""The `mailgateway` command: one entry point, errors mapped once to one line and an exit code."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
from sqlalchemy.exc import DBAPIError

from mailgateway import __version__
from mailgateway.config import Settings, load_settings
from mailgateway.errors import MailgatewayError
from mailgateway.logs import setup_logging
from mailgateway.runtime import Runtime, open_runtime
from models.errors import DomainError

log = logging.getLogger(__name__)


class Context:
    """Settings and runtime, opened on first use so `--help` and `check-config` stay light."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None
        self._runtime: Runtime | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = open_runtime(self.settings)
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              default=lambda: os.environ.get("MAILGATEWAY_CONFIG", "config.toml"),
              show_default="./config.toml or $MAILGATEWAY_CONFIG", help="The configuration file.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.version_option(__version__, prog_name="mailgateway")
@click.pass_context
def cli(ctx: click.Context, config_path: Path, log_level: str) -> None:
    """mailgateway: an email-first helpdesk gateway."""
    setup_logging(log_level)
    ctx.obj = Context(config_path)
    ctx.call_on_close(ctx.obj.close)


def main() -> None:
    """Console script: domain and configuration errors become one line on stderr, no traceback."""
    from mailgateway import (  # noqa: F401  (register commands)
        cli_agents,
        cli_imap,
        cli_ingest,
        cli_outbox,
        cli_setup,
        cli_tickets,
    )

    try:
        code = cli.main(standalone_mode=False)
    except click.ClickException as error:
        error.show()
        code = error.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        code = 1
    except MailgatewayError as error:
        click.echo(f"mailgateway: {error}", err=True)
        code = getattr(error, "exit_code", 1)
    except DomainError as error:
        click.echo(f"mailgateway: {error}", err=True)
        code = 1
    except DBAPIError as error:  # down, unreachable or never initialised: one line, and 75 so
        # an MTA piping mail in retries instead of bouncing
        reason = str(error.orig or error).strip().splitlines()[0]
        click.echo(f"mailgateway: database error: {reason} "
                   "(is the database up, and has `mailgateway init` run?)", err=True)
        code = os.EX_TEMPFAIL
    sys.exit(code if isinstance(code, int) else 0)
