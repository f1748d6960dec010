"""The errors each edge maps to an answer: SMTP code, exit status or HTTP status."""

from __future__ import annotations

import os


class MailgatewayError(Exception):
    """Base of the errors the product raises on purpose."""


class ConfigError(MailgatewayError):
    """config.toml is wrong: one line naming the file and the key; exit 78 (EX_CONFIG)."""

    exit_code = os.EX_CONFIG


class TemporaryFailure(MailgatewayError):
    """Try again later: 451 4.3.0 over SMTP, exit 75 (EX_TEMPFAIL), HTTP 503."""

    exit_code = os.EX_TEMPFAIL


class MessageRejected(MailgatewayError):
    """The input is not something we can take: 550/552 over SMTP, exit 65 (EX_DATAERR)."""

    exit_code = os.EX_DATAERR
