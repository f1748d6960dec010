"""Signed reply addresses: support+t123-<mac>@example.com names ticket 123 unforgeably.

Our Reply-To carries the token, so a customer's answer finds its ticket even when
their client dropped In-Reply-To and the subject tag; the HMAC, made with the
secret key, means no one can write into a ticket by guessing its number.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

TOKEN = re.compile(r"\+t(\d{1,12})-([a-z2-7]{10})@", re.IGNORECASE)
VERP = re.compile(r"\+b(\d{1,15})-([a-z2-7]{10})@", re.IGNORECASE)


def _mac(secret: str, value: str) -> str:
    digest = hmac.new(secret.encode(), value.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode().lower()[:10]


def _tagged(address: str, marker: str, secret: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local}+{marker}-{_mac(secret, marker)}@{domain}"


def base_address(address: str) -> str:
    """support+t12-x@example.com -> support@example.com: the mailbox behind a tagged address."""
    local, _, domain = address.lower().rpartition("@")
    return f"{local.partition('+')[0]}@{domain}"


def reply_address(queue_address: str, ticket_id: int, secret: str) -> str:
    """The Reply-To for mail on a ticket: the queue's address with a signed ticket tag."""
    return _tagged(queue_address, f"t{ticket_id}", secret)


def ticket_from_address(address: str, secret: str) -> int | None:
    """The ticket an address names, if its signature is ours; None for any forgery."""
    found = TOKEN.search(address)
    if found and hmac.compare_digest(found.group(2).lower(), _mac(secret, f"t{found.group(1)}")):
        return int(found.group(1))
    return None


def bounce_address(base_address: str, outbox_id: int, secret: str) -> str:
    """A per-message envelope sender (VERP): a bounce names exactly the mail that failed."""
    return _tagged(base_address, f"b{outbox_id}", secret)


def outbox_from_bounce_address(address: str, secret: str) -> int | None:
    found = VERP.search(address)
    if found and hmac.compare_digest(found.group(2).lower(), _mac(secret, f"b{found.group(1)}")):
        return int(found.group(1))
    return None
