"""`mailgateway ingest` (an MTA pipe, and history import) and `mailgateway quarantine`.

One JSON line per message. Exit 0 when every message was stored, ignored or kept in
quarantine; 75 (EX_TEMPFAIL) on a transient failure so the MTA retries; 65 (EX_DATAERR)
when the input is not a message at all (it is still kept in quarantine).
"""

from __future__ import annotations

import functools
import json
import mailbox
import multiprocessing
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

import click

from mailgateway.cli import Context, cli, pass_context
from mailgateway.config import load_settings
from mailgateway.errors import TemporaryFailure
from mailgateway.ingest import IngestResult, Source, receive_batch, retry_quarantined
from mailgateway.runtime import Runtime, open_runtime
from models import inbound

BATCH = 50  # messages per commit; small enough that parallel workers take turns often


Item = tuple[str, Path | bytes]  # a message's name, and its file or its bytes


def _messages(files: Sequence[Path], mbox: Path | None, maildir: Path | None
              ) -> Iterator[Item]:
    """Every message asked for, stdin when nothing else is. Files stay paths: a --jobs
    worker reads its own, so the process that hands them out never holds their bytes."""
    for path in files:
        yield str(path), path
    if mbox:  # get_bytes: the bytes as they are; as_bytes() would refold the headers
        box = mailbox.mbox(mbox, create=False)
        for key in box.iterkeys():  # iterating a mailbox yields messages, not keys
            yield f"{mbox}:{key}", unquote_from(box.get_bytes(key))
    if maildir:
        for key, path in _maildir_files(maildir):
            yield f"{maildir}:{key}", path
    if not files and not mbox and not maildir:
        yield "stdin", sys.stdin.buffer.read()


FROM_QUOTED = re.compile(rb"^>(>*From )", re.MULTILINE)


def unquote_from(data: bytes) -> bytes:
    """An mbox writer quotes a body line starting "From " as ">From " (and, mboxrd, a quoted
    one with one more ">"); reading takes one ">" off, as mutt and Thunderbird do, so the
    message is the one that was written."""
    return FROM_QUOTED.sub(rb"\1", data)


def _maildir_files(maildir: Path) -> list[tuple[str, Path]]:
    """A Maildir's messages (new/ and cur/) by key, the order mailbox.Maildir gives them: its
    key is the file name before the flags that follow the colon."""
    found = [(entry.name.split(":")[0], Path(entry.path))
             for sub in ("new", "cur") if (maildir / sub).is_dir()
             for entry in os.scandir(maildir / sub)
             if entry.is_file() and not entry.name.startswith(".")]
    return sorted(found)


def _a_maildir(_ctx: click.Context, _param: click.Parameter, path: Path | None) -> Path | None:
    if path is not None and not ((path / "cur").is_dir() or (path / "new").is_dir()):
        raise click.BadParameter(f"{path} is not a Maildir: it has no cur/ or new/ folder")
    return path


def _batch(chunk: Sequence[Item], kind: str) -> list[tuple[bytes, Source]]:
    """A chunk's bytes; a file gone meanwhile is a temporary failure (exit 75), not a loss."""
    try:
        return [(data.read_bytes() if isinstance(data, Path) else data, Source(kind, name))
                for name, data in chunk]
    except OSError as error:
        raise TemporaryFailure(f"cannot read {error.filename}: {error.strerror}") from error


def _chunks(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Turns:
    """Chunk n commits after chunk n-1, whichever worker holds them: the workers store and
    parse side by side, the commits stay in the order of the import, so a reply always finds
    the parent an earlier chunk stored."""

    def __init__(self, condition, counter) -> None:  # type: ignore[no-untyped-def]
        self.condition, self.counter = condition, counter

    @contextmanager
    def of(self, index: int) -> Iterator[None]:
        with self.condition:
            self.condition.wait_for(lambda: self.counter.value == index)
        try:
            yield
        finally:
            with self.condition:
                self.counter.value += 1
                self.condition.notify_all()


_turns: _Turns | None = None  # each worker's, set once by its initializer
_runtime: Runtime | None = None  # each worker's, opened by its first chunk and kept


def _start_worker(condition, counter) -> None:  # type: ignore[no-untyped-def]
    global _turns
    _turns = _Turns(condition, counter)


def _worker_runtime(config: str) -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = _open(lambda: open_runtime(load_settings(config)))
    return _runtime


def _ingest_chunk(config: str, kind: str, index: int, chunk: list[Item]) -> list[dict] | str:
    """Worker for --jobs: its own runtime; a TemporaryFailure comes back as its text (its
    turn is passed on all the same, so the other workers never wait for it forever)."""
    turn = functools.partial(_turns.of, index)
    try:
        runtime, items = _worker_runtime(config), _batch(chunk, kind)
    except TemporaryFailure as error:  # nothing to commit: the turn passes on at once
        with turn():
            return str(error)
    try:
        return [r.as_json() | {"_65": r.not_a_message}
                for r in receive_batch(runtime, items, turn=turn)]
    except TemporaryFailure as error:
        return str(error)


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--mbox", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--maildir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              callback=_a_maildir)
@click.option("--jobs", "-j", default=0, type=click.IntRange(0, 64),
              help="Worker processes; 0 (default): every core for --maildir/--mbox.")
@pass_context
def ingest(ctx: Context, files: tuple[Path, ...], mbox: Path | None, maildir: Path | None,
           jobs: int) -> None:
    """Take messages from FILES, an mbox, a Maildir, or standard input."""
    kind = "pipe" if not (files or mbox or maildir) else "import"
    if jobs == 0:
        jobs = _automatic_jobs(bool(mbox or maildir))
    chunks = _chunks(_messages(files, mbox, maildir), BATCH)
    progress = _progress(maildir, mbox, files)
    exit_code = 0
    shared_terminal = (progress.external_write_mode if progress and sys.stdout.isatty()
                       else nullcontext)
    try:
        for results in _run(ctx, kind, chunks, jobs):
            for result in results:
                if result.pop("_65", False):
                    exit_code = os.EX_DATAERR
                with shared_terminal():  # the line goes above the bar, not after it
                    click.echo(json.dumps(result, ensure_ascii=False))
            if progress is not None:
                progress.update(len(results))
    except TemporaryFailure as error:
        click.echo(f"mailgateway: {error}", err=True)
        sys.exit(os.EX_TEMPFAIL)
    finally:
        if progress is not None:
            progress.close()
    sys.exit(exit_code)


def _automatic_jobs(importing: bool) -> int:
    """An import uses every core (up to 4): workers parse side by side while the commits
    take turns in import order (bench/ingest.py, 2 cores: SQLite 358 -> 430 msg/s,
    PostgreSQL 236 -> 308). A pipe brings one message: one process."""
    return min(os.cpu_count() or 1, 4) if importing else 1


def _run(ctx: Context, kind: str, chunks: Iterator[list[Item]], jobs: int
         ) -> Iterator[list[dict]]:
    if jobs == 1:
        runtime = _open(lambda: ctx.runtime)
        for chunk in chunks:
            results: list[IngestResult] = receive_batch(runtime, _batch(chunk, kind))
            yield [r.as_json() | {"_65": r.not_a_message} for r in results]
        return
    turns = (multiprocessing.Condition(), multiprocessing.Value("q", 0))
    with ProcessPoolExecutor(jobs, initializer=_start_worker, initargs=turns) as pool:
        window: deque[Future] = deque()  # a few chunks ahead, not the whole import in memory
        for index, chunk in enumerate(chunks):
            window.append(pool.submit(_ingest_chunk, str(ctx.settings.path), kind, index,
                                      chunk))
            if len(window) > 2 * jobs:
                yield _outcome(window.popleft())
        while window:
            yield _outcome(window.popleft())


def _outcome(future: Future) -> list[dict]:
    outcome = future.result()
    if isinstance(outcome, str):
        raise TemporaryFailure(outcome)
    return outcome


def _open(opener: Callable[[], Runtime]) -> Runtime:
    """No store folder (a file in its place, a full disk): the MTA should retry, not bounce."""
    try:
        return opener()
    except OSError as error:
        raise TemporaryFailure(f"cannot open the message store: {error}") from error


def _progress(maildir: Path | None, mbox: Path | None, files: Sequence[Path]):  # type: ignore[no-untyped-def]
    """A progress bar on stderr for long imports, only when a person is watching."""
    if not sys.stderr.isatty() or not (maildir or mbox or len(files) > 20):
        return None
    from tqdm import tqdm

    total = len(files) + (len(_maildir_files(maildir)) if maildir else 0)
    return tqdm(total=total or None, unit="msg", file=sys.stderr)


@cli.group()
def quarantine() -> None:
    """Messages that could not be processed: kept with the error until retried or deleted."""


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def quarantine_list(ctx: Context, as_json: bool) -> None:
    with ctx.runtime.sessions() as session:
        rows = [{"id": r.id, "received_at": r.received_at.isoformat() + "Z", "source": r.source,
                 "from": r.header_from, "subject": r.header_subject,
                 "message_id": r.header_message_id, "size": r.size, "reason": r.reason}
                for r in inbound.quarantined(session)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
    for r in rows if not as_json else []:
        click.echo(f"#{r['id']}\t{r['received_at']}\t{r['from'] or '-'}\t{r['reason']}")


@quarantine.command("show")
@click.argument("raw_id", type=int)
@click.option("--raw", "show_raw", is_flag=True, help="Print the original message.")
@pass_context
def quarantine_show(ctx: Context, raw_id: int, show_raw: bool) -> None:
    with ctx.runtime.sessions() as session:
        raw = inbound.get_raw(session, raw_id)
    if show_raw:
        sys.stdout.buffer.write(ctx.runtime.store.get(raw.sha256))
        return
    for key in ("id", "state", "source", "received_at", "size", "sha256", "header_from",
                "header_subject", "header_message_id", "recipients", "attempts", "reason"):
        click.echo(f"{key}: {getattr(raw, key)}")


@quarantine.command("retry")
@click.argument("raw_ids", type=int, nargs=-1, required=True)
@pass_context
def quarantine_retry(ctx: Context, raw_ids: tuple[int, ...]) -> None:
    """Run messages through the normal ingest path again."""
    for raw_id in raw_ids:
        click.echo(json.dumps(retry_quarantined(ctx.runtime, raw_id).as_json()))


@quarantine.command("delete")
@click.argument("raw_ids", type=int, nargs=-1, required=True)
@pass_context
def quarantine_delete(ctx: Context, raw_ids: tuple[int, ...]) -> None:
    for raw_id in raw_ids:
        with ctx.runtime.sessions.begin() as session:
            inbound.delete_quarantined(session, raw_id)
        click.echo(f"deleted #{raw_id}")
