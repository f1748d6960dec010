"""Talking to one IMAP account: connect (TLS verified by default), log in, open the folder,
acknowledge taken messages. Shared by the poller and `mailgateway imap test/status`."""

from __future__ import annotations

import contextlib
import imaplib
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mailgateway.config import ImapAccount
from mailgateway.imap_auth import AccountProblem, Authenticator

CONNECT_TIMEOUT = 30  # seconds for connecting and for each command

# Faults a reconnect may cure: the network, the server going away, a command refused
# mid-session. (LoginFailed and FolderMissing are AccountProblems, handled apart.)
TRANSIENT = (OSError, IMAPClientError, imaplib.IMAP4.error)


class FolderMissing(AccountProblem):
    pass


@dataclass(frozen=True)
class FolderInfo:
    uidvalidity: int
    exists: int
    uidnext: int | None


def connect(account: ImapAccount, auth: Authenticator,
            timeout: float = CONNECT_TIMEOUT) -> IMAPClient:
    """A logged-in client. Implicit TLS or STARTTLS verify the certificate against the
    system's CAs or ca_file; a certificate we cannot trust is an AccountProblem."""
    context = None
    if account.tls or account.starttls:
        context = ssl.create_default_context(
            cafile=str(account.ca_file) if account.ca_file else None)
    try:
        client = IMAPClient(account.host, port=account.port, ssl=account.tls,
                            ssl_context=context, timeout=timeout)
    except ssl.SSLCertVerificationError as error:
        raise _untrusted(account, error) from None
    try:
        if account.starttls and not account.tls:
            client.starttls(context)
        auth.login(client)
    except ssl.SSLCertVerificationError as error:
        _close(client)
        raise _untrusted(account, error) from None
    except BaseException:
        _close(client)
        raise
    return client


@contextlib.contextmanager
def connected(account: ImapAccount, auth: Authenticator,
              timeout: float = CONNECT_TIMEOUT) -> Iterator[IMAPClient]:
    client = connect(account, auth, timeout)
    try:
        yield client
    finally:
        _close(client)


def _untrusted(account: ImapAccount, error: ssl.SSLCertVerificationError) -> AccountProblem:
    hint = "" if account.ca_file else "; set ca_file if the server uses a private CA"
    return AccountProblem(f"the certificate of {account.host}:{account.port} is not trusted "
                          f"({error.verify_message}){hint}")


def _close(client: IMAPClient) -> None:
    """Log out politely if the connection still works; never raise while cleaning up."""
    with contextlib.suppress(*TRANSIENT):
        client.logout()
    with contextlib.suppress(*TRANSIENT):
        client.shutdown()


def open_folder(client: IMAPClient, folder: str) -> FolderInfo:
    try:
        answer = client.select_folder(folder)
    except IMAPClientError as error:
        with contextlib.suppress(*TRANSIENT):
            if not client.folder_exists(folder):
                raise FolderMissing(f"there is no folder {folder!r} on the server") from None
        raise error
    return FolderInfo(uidvalidity=int(answer[b"UIDVALIDITY"]), exists=int(answer[b"EXISTS"]),
                      uidnext=int(answer[b"UIDNEXT"]) if b"UIDNEXT" in answer else None)


def check_folder(client: IMAPClient, folder: str) -> None:
    """The processed folder must exist: we never create folders an admin may have mistyped."""
    if not client.folder_exists(folder):
        raise FolderMissing(f"there is no processed_folder {folder!r} on the server")


def uids_after(client: IMAPClient, last_uid: int) -> list[int]:
    """UIDs above last_uid. `N:*` always matches the highest message, even below N."""
    return sorted(u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid)


def start_idle(client: IMAPClient) -> bool:
    """Enter IDLE; True when the server already said something with its go-ahead.

    A message that arrived just before IDLE is announced at once, often in the same
    packet as the go-ahead: imaplib then reads it into its buffer, where imapclient's
    idle_check (which polls the socket) never looks, and the message would wait for the
    next IDLE re-issue. So look in the buffer, without blocking."""
    client.idle()
    sock = client.socket()
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(client._imap.file.peek(1))  # noqa: SLF001 -- see above
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    finally:
        sock.settimeout(timeout)


def announced_arrivals(client: IMAPClient) -> bool:
    """Did the server announce new messages (EXISTS) since we last asked?

    A server shows a new message to a session only once it has sent EXISTS for it, and
    it may do so at the end of any command: the SEARCH that found nothing may itself
    announce a message that arrived while it ran. imapclient returns such responses only
    from NOOP and IDLE; the others stay in imaplib's untagged_responses, read (and
    emptied, so they do not pile up over a long session) here. Missing one would leave
    the message waiting until the next IDLE re-issue, many minutes later."""
    pending = client._imap.untagged_responses  # noqa: SLF001 -- see above
    arrived = "EXISTS" in pending
    pending.clear()
    return arrived


def acknowledge(client: IMAPClient, uids: Sequence[int], processed_folder: str) -> None:
    """\\Seen, then into the processed folder if one is configured: MOVE where the server
    has it (RFC 6851), else COPY, \\Deleted and UID EXPUNGE of just these messages."""
    client.add_flags(uids, [b"\\Seen"], silent=True)
    if not processed_folder:
        return
    if client.has_capability("MOVE"):
        client.move(uids, processed_folder)
        return
    client.copy(uids, processed_folder)
    client.add_flags(uids, [b"\\Deleted"], silent=True)
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(uids)
    else:
        client.expunge()  # no UID EXPUNGE: also removes what others flagged \Deleted


def describe(error: BaseException) -> str:
    """One line for logs and status, without the traceback."""
    if isinstance(error, AccountProblem):
        return str(error)
    text = str(error).strip() or type(error).__name__
    return f"{type(error).__name__}: {text}"
