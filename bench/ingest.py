"""Ingest benchmark (issue 7, Performance): prints figures, asserts nothing.

In one run, on one seeded corpus (bench/corpus.py):
  (1) `mailgateway ingest --maildir` with --jobs 1 and --jobs 2, start-up (timed on an
      empty Maildir) subtracted;
  (2) `mailgateway run`'s SMTP listener with 1, 4 and 16 smtplib clients on loopback, each
      on one connection, each message timed from MAIL to the 250 that follows its commit;
and the yardsticks, on the same corpus in the same run:
  (3) mail-parser alone parsing it, as shipped (and our parse.py, for the profile), each
      in a process of its own;
  (4) a bare aiosmtpd server that only answers 250, with the same clients.
Every measurement gets a fresh database: a SQLite file, or with --database-url
postgresql+psycopg://... a schema of its own, dropped afterwards. (1) and (3) run --repeat
times and the best run counts, for both, as timeit does.

    python bench/ingest.py [--messages 2000] [--smtp-messages 1000] [--database-url URL ...]
                           [--repeat 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import smtplib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import corpus  # noqa: E402

MAILGATEWAY = Path(sys.executable).with_name("mailgateway")
HOST = "127.0.0.1"
CLIENTS = (1, 4, 16)
SECRET = {"MAILGATEWAY_BENCH_SECRET": "bench-secret-key-0123456789abcdef"}
BARE_SERVER = """
import sys
from aiosmtpd.controller import Controller

class Handler:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"

controller = Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[1]),
                        data_size_limit=26214400, enable_SMTPUTF8=True)
controller.start()
sys.stdin.read()
controller.stop()
"""


@dataclass
class Figure:
    what: str
    database: str
    messages: int
    seconds: float
    p50: float | None = None  # ms
    p99: float | None = None
    actions: Counter = field(default_factory=Counter)
    failure: str = ""  # the run did not finish: why

    @property
    def rate(self) -> float:
        return float("nan") if self.failure else self.messages / self.seconds


# -- databases and instances ---------------------------------------------------------------

@contextmanager
def fresh_database(base: str, folder: Path) -> Iterator[str]:
    """An empty database: a new SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if base == "sqlite":
        yield f"sqlite:///{folder}/bench-{uuid.uuid4().hex[:8]}.db"
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def instance(folder: Path, url: str, port: int = 0) -> Path:
    """A config.toml as an admin would write it: the listener on, the web inbox off."""
    folder.mkdir(parents=True)
    config = folder / "config.toml"
    config.write_text(f"""[database]\nurl = {json.dumps(url)}\n
[storage]\npath = "store"\n
[smtp]\nenabled = true\nhost = "{HOST}"\nport = {port}\ndomains = ["example.com"]\n
[outbound]\ntransport = "directory"\npath = "sent"\n
[web]\nenabled = false\nsecret_key_env = "{next(iter(SECRET))}"\n""")
    mailgateway(config, "init", stdout=subprocess.DEVNULL)
    return config


def mailgateway(config: Path, *args: str, **popen: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(MAILGATEWAY), "--config", str(config), *args], check=True,
                          env=os.environ | SECRET, **popen)


# -- (1) mailgateway ingest --maildir -------------------------------------------------------

def write_maildir(folder: Path, messages: list[bytes]) -> Path:
    for sub in ("tmp", "new", "cur"):
        (folder / sub).mkdir(parents=True)
    for n, data in enumerate(messages):  # sorted keys keep the corpus order
        (folder / "cur" / f"{n:07d}.bench:2,S").write_bytes(data)
    return folder


def timed_ingest(config: Path, maildir: Path, jobs: int, out: Path) -> float:
    with open(out, "wb") as results:
        started = time.perf_counter()
        mailgateway(config, "--log-level", "warning", "ingest", "--maildir", str(maildir),
                    "--jobs", str(jobs), stdout=results, stderr=subprocess.PIPE)
        return time.perf_counter() - started


def measure_ingest(base: str, work: Path, maildir: Path, empty: Path, jobs: int,
                   count: int) -> Figure:
    with fresh_database(base, work) as url:
        config = instance(work / f"ingest-{uuid.uuid4().hex[:6]}", url)
        startup = min(timed_ingest(config, empty, jobs, work / "empty.jsonl") for _ in range(2))
        try:
            elapsed = timed_ingest(config, maildir, jobs, work / "ingest.jsonl")
        except subprocess.CalledProcessError as error:
            reason = (error.stderr or b"").decode().strip().splitlines()[-1:] or ["?"]
            print(f"  ingest --jobs {jobs} FAILED: exit {error.returncode}: {reason[0]}")
            return Figure(f"ingest --maildir --jobs {jobs}", label(base), count, 0,
                          failure=f"exit {error.returncode}: {reason[0][:160]}")
    actions = Counter(json.loads(line)["action"]
                      for line in (work / "ingest.jsonl").read_text().splitlines())
    figure = Figure(f"ingest --maildir --jobs {jobs}", label(base), count,
                    elapsed - startup, actions=actions)
    print(f"  {figure.what}: {elapsed:.1f} s - start-up {startup:.2f} s -> "
          f"{figure.rate:.0f} msg/s {dict(actions)}", flush=True)
    return figure


# -- (2) and (4) SMTP clients ---------------------------------------------------------------

def blast(port: int, messages: list[bytes], clients: int) -> tuple[float, list[float],
                                                                    Counter]:
    """clients connections, each sending its share one after the other: the wall time,
    every message's MAIL-to-250 latency, and the first word of each 250."""
    shares = [messages[i::clients] for i in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    answers: list[Counter] = [Counter() for _ in range(clients)]
    ready = threading.Barrier(clients + 1)
    failures: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with smtplib.SMTP(HOST, port, timeout=300) as smtp:
                smtp.ehlo()
                ready.wait()
                for data in shares[i]:
                    started = time.perf_counter()
                    smtp.mail("customer@bench.example")
                    smtp.rcpt("support@example.com")
                    code, reply = smtp.data(data)
                    latencies[i].append(time.perf_counter() - started)
                    if code != 250:
                        raise RuntimeError(f"{code} {reply!r}")
                    answers[i][reply.decode().split()[1]] += 1
        except BaseException as error:  # noqa: BLE001 -- reported by the main thread
            failures.append(error)
            ready.abort()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return (time.perf_counter() - started, [x for part in latencies for x in part],
            sum(answers, Counter()))


def smtp_figure(what: str, database: str, messages: list[bytes], port: int,
                clients: int) -> Figure:
    seconds, latencies, answers = blast(port, messages, clients)
    cuts = statistics.quantiles(latencies, n=100)
    figure = Figure(f"{what}, {clients} client{'s' * (clients > 1)}", database,
                    len(messages), seconds, cuts[49] * 1000, cuts[98] * 1000, answers)
    print(f"  {figure.what}: {figure.rate:.0f} msg/s, p50 {figure.p50:.1f} ms, "
          f"p99 {figure.p99:.1f} ms {dict(answers) if database != '-' else ''}", flush=True)
    return figure


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def serving(command: list[str], port: int, log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=out,
                                   env=os.environ | SECRET)
    try:
        wait_for_port(port, process)
        yield process
    finally:
        process.stdin.close()
        process.terminate()
        process.wait(timeout=60)


def measure_bare(work: Path, messages: list[bytes], clients: int) -> Figure:
    port = free_port()
    with serving([sys.executable, "-c", BARE_SERVER, str(port)], port, work / "bare.log"):
        return smtp_figure("bare aiosmtpd", "-", messages, port, clients)


def measure_smtp(base: str, work: Path, messages: list[bytes], clients: int) -> Figure:
    port = free_port()
    with fresh_database(base, work) as url:
        config = instance(work / f"smtp-{uuid.uuid4().hex[:6]}", url, port)
        with serving([str(MAILGATEWAY), "--config", str(config), "run"], port,
                     config.parent / "run.log"):
            return smtp_figure("SMTP listener", label(base), messages, port, clients)


# -- (3) parsing alone ----------------------------------------------------------------------

PARSE_RUN = """
import sys, time
from pathlib import Path
what, maildir, repeat = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
messages = [path.read_bytes() for path in sorted((maildir / "cur").iterdir())]
if what == "parse.py":
    from mailgateway.config import LimitSettings
    from mailgateway.parse import parse
    limits = LimitSettings()
    run = lambda raw: parse(raw, limits)
else:
    import mailparser
    run = mailparser.parse_from_bytes
    if what == "mail-parser, sped up":
        from mailgateway.feedparser_speedup import install
        install()
seconds = []
for _ in range(repeat):
    started = time.perf_counter()
    for raw in messages:
        run(raw)
    seconds.append(time.perf_counter() - started)
print(min(seconds))
"""
PARSERS = {"mail-parser alone": "mail-parser",
           "mail-parser with feedparser_speedup": "mail-parser, sped up",
           "parse.py (email package + our walk)": "parse.py"}


def measure_parse(maildir: Path, count: int, repeat: int) -> list[Figure]:
    """Each in a process of its own: the yardstick is mail-parser as shipped, on a standard
    library that our parse.py has not touched (importing it installs feedparser_speedup,
    which speeds mail-parser up too: the second row)."""
    figures = []
    for what, name in PARSERS.items():
        seconds = subprocess.run(
            [sys.executable, "-c", PARSE_RUN, name, str(maildir), str(repeat)], check=True,
            capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent).stdout
        figures.append(Figure(what, "-", count, float(seconds)))
        print(f"  {what}: {figures[-1].rate:.0f} msg/s (best of {repeat})", flush=True)
    return figures


def best(figures: list[Figure]) -> Figure:
    """The fastest of repeated runs, as timeit takes its minimum: this VM's speed drifts,
    and yardstick and ingest are both taken at their best, so the ratio stays fair."""
    finished = [f for f in figures if not f.failure]
    return max(finished, key=lambda f: f.rate) if finished else figures[0]


# -- report ---------------------------------------------------------------------------------

def label(base: str) -> str:
    return "SQLite" if base == "sqlite" else "PostgreSQL"


def filesystem(path: Path) -> str:
    """The type of the file system under path (ext4, tmpfs...), from /proc/mounts."""
    mounts = Path("/proc/mounts")
    if not mounts.exists():
        return "?"
    best_point, kind = "", "?"
    for line in mounts.read_text().splitlines():
        point, fs_type = line.split()[1:3]
        if (str(path.resolve()) + "/").startswith(point.rstrip("/") + "/") and \
                len(point) >= len(best_point):
            best_point, kind = point, fs_type
    return kind


def machine(bases: list[str]) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    facts = [f"CPU: {model}, {len(os.sched_getaffinity(0))} cores (nproc)",
             f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
             f"{platform.system()} {platform.release()}"]
    for base in bases:
        if base != "sqlite":
            engine = create_engine(base)
            with engine.connect() as connection:
                facts.append(connection.execute(text("SELECT version()")).scalar()
                             .split(" on ")[0])
            engine.dispose()
    return facts


def verdicts(figures: list[Figure]) -> list[tuple[str, float, str, bool]]:
    """(what, ratio, target, met) for each target of the issue."""
    by = {(f.what, f.database): f for f in figures}
    parse_rate = by[("mail-parser alone", "-")].rate
    bare = by[("bare aiosmtpd, 16 clients", "-")]
    out = []
    for database in sorted({f.database for f in figures} - {"-"}):
        for jobs, goal in ((1, 0.5), (2, 1.0)):
            f = by[(f"ingest --maildir --jobs {jobs}", database)]
            ratio = f.rate / parse_rate
            out.append((f"{database}: ingest --jobs {jobs} / mail-parser alone", ratio,
                        f">= {goal}", ratio >= goal))
        f = by[("SMTP listener, 16 clients", database)]
        out.append((f"{database}: SMTP 16 clients / bare server, rate", f.rate / bare.rate,
                    ">= 0.6", f.rate / bare.rate >= 0.6))
        out.append((f"{database}: SMTP 16 clients / bare server, p99", f.p99 / bare.p99,
                    "<= 2", f.p99 / bare.p99 <= 2))
    if {"SQLite", "PostgreSQL"} <= {f.database for f in figures}:
        for what in ("ingest --maildir --jobs 1", "ingest --maildir --jobs 2",
                     "SMTP listener, 16 clients"):
            ratio = by[(what, "SQLite")].rate / by[(what, "PostgreSQL")].rate
            out.append((f"SQLite / PostgreSQL: {what}", ratio, "<= 2", ratio <= 2))
    return out


def report(figures: list[Figure], facts: list[str], corpus_facts: str) -> str:
    by = {(f.what, f.database): f for f in figures}
    parse_rate = by[("mail-parser alone", "-")].rate
    lines = [*(f"- {fact}" for fact in facts), f"- corpus: {corpus_facts}", "",
             "| measurement | database | msg/s | p50 ms | p99 ms | vs yardstick |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for f in figures:
        if f.what.startswith("SMTP listener"):
            bare = by[(f.what.replace("SMTP listener", "bare aiosmtpd"), "-")]
            versus = f"{f.rate / bare.rate:.2f}× rate, {f.p99 / bare.p99:.2f}× p99 of bare"
        elif f.what.startswith(("ingest", "parse.py", "mail-parser with")):
            versus = f"{f.rate / parse_rate:.2f}× mail-parser alone"
        else:
            versus = "yardstick"
        ms = [f"{v:.1f}" if v is not None else "" for v in (f.p50, f.p99)]
        if f.failure:
            versus = f"failed, {f.failure}"
        lines.append(f"| {f.what} | {f.database} | {f.rate:.0f} | {ms[0]} | {ms[1]} "
                     f"| {versus} |")
    lines += ["", "| target | ratio | wanted | met |", "| --- | ---: | --- | --- |"]
    lines += [f"| {what} | {ratio:.2f} | {goal} | {'yes' if met else '**no**'} |"
              for what, ratio, goal, met in verdicts(figures)]
    return "\n".join(lines)


def describe(messages: list[bytes]) -> str:
    sizes = [len(m) for m in messages]
    replies = sum(b"\nIn-Reply-To:" in m for m in messages)
    attached = sum(b"Content-Disposition: attachment" in m for m in messages)
    return (f"{len(messages)} messages, {statistics.mean(sizes) / 1024:.1f} KB average "
            f"({sum(sizes) / 2**20:.1f} MB), {replies / len(messages):.0%} replies, "
            f"{attached / len(messages):.1%} with an attachment")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--smtp-messages", type=int, default=1000,
                        help="how many of them each SMTP run sends (keeps the run short)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", action="append", dest="bases",
                        help="sqlite (the default) or postgresql+psycopg://...; repeatable")
    parser.add_argument("--repeat", type=int, default=3,
                        help="parse and ingest runs per figure; the best one counts")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--work", type=Path, help="the folder that holds the instances (their "
                        "stores and SQLite files); default: a temporary one on /tmp. /dev/shm "
                        "shows what the figures owe to the disk")
    args = parser.parse_args()
    bases = ["sqlite" if b.startswith("sqlite") else b for b in args.bases or ["sqlite"]]
    load_before = os.getloadavg()
    messages = corpus(args.messages, args.seed)
    facts = machine(bases)
    print("\n".join(facts) + f"\ncorpus: {describe(messages)}", flush=True)
    sample = messages[:args.smtp_messages]
    with tempfile.TemporaryDirectory(prefix="mailgateway-bench-", dir=args.work) as folder:
        work = Path(folder)
        facts.append(f"instances (store and SQLite files) under {work.parent}, "
                     f"{filesystem(work)}")
        maildir = write_maildir(work / "maildir", messages)
        empty = write_maildir(work / "empty", [])
        figures = measure_parse(maildir, len(messages), args.repeat)
        figures += [measure_bare(work, sample, n) for n in CLIENTS]
        for base in bases:
            figures += [measure_smtp(base, work, sample, n) for n in CLIENTS]
            figures += [best([measure_ingest(base, work, maildir, empty, jobs, len(messages))
                              for _ in range(args.repeat)]) for jobs in (1, 2)]
    load_after = os.getloadavg()
    facts.append("load average (1, 5, 15 min) before {:.2f} {:.2f} {:.2f}, after "
                 "{:.2f} {:.2f} {:.2f}".format(*load_before, *load_after))
    text_report = report(figures, facts, f"{describe(messages)}; each SMTP run sends the "
                                         f"first {len(sample)} of them")
    print("\n" + text_report)
    if args.out:
        args.out.write_text(text_report + "\n")


if __name__ == "__main__":
    main()
