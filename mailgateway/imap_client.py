"""Talking to one IMAP account: connect (TLS verified by default), log in, open the folder,
acknowledge taken messages. Shared by the poller and `mailgateway imap test/status`."""

from __future__ import annotations

import contextlib
import imaplib
import socket
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


@dataclass(frozen=True)
class Reconciliation:
    """The folder as the server has it now against what we recorded taking."""

    folder: str
    uidvalidity: int
    count: int
    highest_uid: int
    not_taken: list[int]  # UIDs above our last UID: not (yet) taken
    unreadable: list[int]  # UIDs in the folder the server would not hand over: skipped

    def sentence(self, our_uidvalidity: int | None) -> str:
        held = (f"{self.folder} holds {self.count} messages up to UID {self.highest_uid}"
                if self.count else f"{self.folder} is empty")
        if our_uidvalidity is not None and our_uidvalidity != self.uidvalidity:
            return (f"{held}; its UIDVALIDITY is now {self.uidvalidity} (ours "
                    f"{our_uidvalidity}): the poller will take the folder again")
        missing = len(self.not_taken) + len(self.unreadable)
        if not missing:
            return f"{held}; we have taken all {self.count}" if self.count else held
        said = f"{held}; we have taken {self.count - missing}"
        if self.not_taken:
            said += f", not yet {len(self.not_taken)}: UID {uid_ranges(self.not_taken)}"
        if self.unreadable:
            said += (f"; the server would not hand over {len(self.unreadable)}: "
                     f"UID {uid_ranges(self.unreadable)} (see the log)")
        return said


def reconcile(client: IMAPClient, folder: str, last_uid: int,
              unreadable: Sequence[int] = ()) -> Reconciliation:
    """Proof that nothing was missed: every UID in the folder up to our last UID was taken
    (UIDs only grow, and the poller advances last UID only after a message is stored),
    but for those the server would not hand over."""
    info = open_folder(client, folder)
    uids, skipped = sorted(client.search("ALL")), set(unreadable)
    return Reconciliation(folder, info.uidvalidity, len(uids), uids[-1] if uids else 0,
                          [u for u in uids if u > last_uid and u not in skipped],
                          [u for u in uids if u in skipped])


def uid_ranges(uids: Sequence[int], most: int = 20) -> str:
    """1,2,3,7 -> "1:3,7" (IMAP's own notation), cut after `most` ranges."""
    ranges: list[list[int]] = []
    for uid in uids:
        if ranges and uid == ranges[-1][1] + 1:
            ranges[-1][1] = uid
        else:
            ranges.append([uid, uid])
    text = [f"{a}:{b}" if a != b else str(a) for a, b in ranges[:most]]
    return ",".join(text) + (",..." if len(ranges) > most else "")


def describe(error: BaseException, account: ImapAccount) -> str:
    """One plain line for logs, status and `imap test`, without the traceback."""
    where = f"{account.host}:{account.port}"
    if isinstance(error, AccountProblem):
        return str(error)
    if isinstance(error, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused (is the server up, the port right?)"
    if isinstance(error, socket.gaierror):
        return f"cannot find the host {account.host!r}: {error.strerror}"
    if isinstance(error, TimeoutError):
        return f"no answer from {where} in time"
    if isinstance(error, ssl.SSLError):
        return (f"TLS with {where} failed: {error.reason or error} (tls = true needs an "
                "implicit-TLS port such as 993; starttls = true a plain one such as 143)")
    text = str(error).strip() or type(error).__name__
    return f"{type(error).__name__}: {text}"
