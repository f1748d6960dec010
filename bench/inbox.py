"""Web inbox benchmark (issue 6, Performance): prints figures, asserts nothing.

Generates 100,000 tickets with 500,000 messages (one ticket has 50) into a SQLite file
through the schema's own migrations, so the search index is kept by its triggers as in
production; the rows are bulk-inserted with SQLAlchemy Core, because the domain operations
would take an hour for this many. The database is kept under bench/out/ and reused.

Then it times, with Flask's test client (server time, no network), the median of 15 runs of:
the first inbox page, a deep page (keyset cursor 30,000 open tickets down), a filtered view, the
priority sort, a search for a rare and for a common word, the live-refresh poll, and the
ticket with 50 messages; and prints the query plan of every statement those requests ran,
flagging a full scan of a big table.

    python bench/inbox.py [--tickets 100000] [--fresh] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import event, insert, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailgateway.cli_setup import prepare_database  # noqa: E402
from mailgateway.config import load_settings  # noqa: E402
from mailgateway.runtime import open_runtime  # noqa: E402
from models import users  # noqa: E402
from models.schema import (  # noqa: E402
    Agent,
    Contact,
    Message,
    Participant,
    Queue,
    Tag,
    Ticket,
    TicketTag,
    utcnow,
)
from webui import create_app  # noqa: E402

OUT = ROOT / "bench" / "out"
PASSWORD = "bench-password-0123"
STATUSES = [("new", 5), ("open", 20), ("pending", 10), ("solved", 25), ("closed", 40)]
PRIORITIES = [("low", 20), ("normal", 60), ("high", 15), ("urgent", 5)]
RARE, COMMON = "okapi", "invoice"
BIG_TABLES = ("ticket", "message", "event", "participant", "ticket_tag")


def words(rng: random.Random, vocabulary: list[str], count: int) -> str:
    return " ".join(rng.choice(vocabulary) for _ in range(count))


def generate(url: str, folder: Path, tickets: int, seed: int = 6) -> None:
    rng = random.Random(seed)
    consonants, vowels = "bcdfghklmnprstvz", "aeiou"
    vocabulary = sorted({"".join(rng.choice(consonants) + rng.choice(vowels)
                                 for _ in range(rng.randint(2, 4))) for _ in range(6000)})
    vocabulary += [COMMON] * 40  # about one message in four says "invoice"
    runtime = open_runtime(load_settings(config(folder, url)))
    prepare_database(runtime)
    now = utcnow()
    with runtime.sessions.begin() as session:
        agents = [users.add_agent(session, f"agent{n}@example.com", name=f"Agent {n}",
                                  admin=n == 0, password=PASSWORD, must_change_password=False)
                  for n in range(5)]
        queues = list(session.scalars(select(Queue)))
        tags = [Tag(name=f"tag{n}") for n in range(10)]
        session.add_all(tags)
        session.flush()
        contacts = [{"id": n + 1, "email": f"customer{n}@example.net", "name": f"Customer {n}",
                     "created_at": now} for n in range(20_000)]
        session.execute(insert(Contact), contacts)
        message_id, batch = 0, {"ticket": [], "message": [], "participant": [], "tag": []}
        for n in range(1, tickets + 1):
            updated = now - timedelta(seconds=rng.randint(0, 180 * 86400))
            created = updated - timedelta(seconds=rng.randint(0, 30 * 86400))
            requester = rng.randint(1, len(contacts))
            count = 50 if n == tickets // 2 else rng.choice((1, 2, 3, 5, 6, 7, 11))
            batch["ticket"].append({
                "id": n, "subject": words(rng, vocabulary, 5).capitalize(),
                "status": pick(rng, STATUSES), "priority": pick(rng, PRIORITIES),
                "queue_id": rng.choice(queues).id, "requester_id": requester,
                "assignee_id": rng.choice([None, None, *[a.id for a in agents]]),
                "snippet": words(rng, vocabulary, 20), "message_count": count,
                "created_at": created, "updated_at": updated, "last_customer_at": updated})
            batch["participant"].append({"ticket_id": n, "contact_id": requester,
                                         "role": "requester"})
            if rng.random() < 0.3:
                batch["tag"].append({"ticket_id": n, "tag_id": rng.choice(tags).id})
            for k in range(count):
                message_id += 1
                body = words(rng, vocabulary, rng.randint(30, 90))
                if message_id % 5000 == 0:
                    body += f" {RARE}"
                batch["message"].append({
                    "id": message_id, "ticket_id": n, "direction": "inbound" if k % 2 == 0
                    else "outbound", "dedup_key": f"<b{message_id}@bench>",
                    "message_id": f"<b{message_id}@bench>", "from_address":
                    contacts[requester - 1]["email"], "from_name": "", "to": [], "cc": [],
                    "subject": "Bench", "created_at": created + timedelta(minutes=k),
                    "text": body, "reply_text": body, "auto_reason": "", "threaded_by": "new",
                    "threaded_ref": "", "notes": []})
            if n % 5000 == 0 or n == tickets:
                flush(session, batch)
                print(f"  {n:,} tickets, {message_id:,} messages", file=sys.stderr)
    runtime.close()


def pick(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def flush(session, batch: dict[str, list]) -> None:  # type: ignore[no-untyped-def]
    for table, rows in (("ticket", Ticket), ("participant", Participant),
                        ("tag", TicketTag), ("message", Message)):
        if batch[table]:
            session.execute(insert(rows), batch[table])
            batch[table].clear()


def config(folder: Path, url: str) -> Path:
    path = folder / "config.toml"
    path.write_text(f'[database]\nurl = "{url}"\n[storage]\npath = "store"\n'
                    '[web]\nsecret_key_env = "BENCH_SECRET"\n'
                    '[[queues]]\nname = "Support"\naddress = "support@example.com"\n'
                    'default = true\n[[queues]]\nname = "Billing"\n'
                    'address = "billing@example.com"\n[[queues]]\nname = "Sales"\n'
                    'address = "sales@example.com"\n')
    return path


def measure(folder: Path, url: str, runs: int, tickets: int) -> dict:
    runtime = open_runtime(load_settings(config(folder, url)))
    prepare_database(runtime)  # a database generated by an older revision gets the new indexes
    app = create_app(runtime.settings, runtime.sessions, store=runtime.store)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    client.post("/login", data={"csrf_token": token, "email": "agent1@example.com",
                                "password": PASSWORD})
    depth = min(30_000, tickets * 3 // 10)
    with runtime.sessions() as session:
        deep = session.execute(
            select(Ticket.updated_at, Ticket.id)
            .where(Ticket.status.in_(("new", "open", "pending")))
            .order_by(Ticket.updated_at.desc(), Ticket.id.desc()).offset(depth).limit(1)).one()
        big = session.scalar(select(Message.ticket_id).group_by(Message.ticket_id)
                             .order_by(text("count(*) desc")).limit(1))
        queue = session.scalar(select(Queue.id).where(Queue.name == "Billing"))
        agent = session.scalar(select(Agent.id).where(Agent.email == "agent2@example.com"))
    paths = {
        "first inbox page": "/",
        f"deep page ({depth:,} down)": f"/?after={deep[0].isoformat()}~{deep[1]}",
        "filtered view": f"/?view=queue-{queue}&priority=high&assignee={agent}",
        "priority sort": "/?sort=priority",
        f"search, rare word ({RARE})": f"/?q={RARE}",
        f"search, common word ({COMMON})": f"/?q={COMMON}",
        "live refresh poll": "/inbox/updates",
        "ticket with 50 messages": f"/tickets/{big}",
    }
    statements: dict[str, list[tuple[str, tuple]]] = {}
    results = {}
    for name, path in paths.items():
        timings = []
        for run in range(runs + 2):  # two warm-up runs
            started = time.perf_counter()
            answer = client.get(path)
            elapsed = (time.perf_counter() - started) * 1000
            assert answer.status_code == 200, (path, answer.status_code)
            if run >= 2:
                timings.append(elapsed)
        results[name] = {"median_ms": round(statistics.median(timings), 1),
                         "p90_ms": round(sorted(timings)[int(len(timings) * 0.9) - 1], 1)}
        statements[name] = capture(runtime.engine, client, path)
    runtime.close()
    return {"timings": results, "plans": plans(url, statements)}


def capture(engine, client, path: str) -> list[tuple[str, tuple]]:  # type: ignore[no-untyped-def]
    seen: list[tuple[str, tuple]] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        client.get(path)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


def plans(url: str, statements: dict[str, list[tuple[str, tuple]]]) -> dict[str, list[str]]:
    """EXPLAIN QUERY PLAN of each statement; a SCAN of a big table without an index is flagged."""
    import sqlite3

    connection = sqlite3.connect(url.removeprefix("sqlite:///"))
    found = {}
    for name, seen in statements.items():
        lines = []
        for statement, parameters in seen:
            for row in connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters):
                detail = row[-1]
                full_scan = re.match(rf"SCAN ({'|'.join(BIG_TABLES)})\b(?!.*INDEX)", detail)
                lines.append(("FULL SCAN  " if full_scan else "           ") + detail)
        found[name] = lines
    connection.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--fresh", action="store_true", help="generate the database again")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("BENCH_SECRET", "bench-secret-key-0123456789")
    folder = OUT / f"inbox-{args.tickets}"
    url = f"sqlite:///{folder / 'inbox.db'}"
    if args.fresh or not (folder / "inbox.db").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob("inbox.db*"):
            leftover.unlink()
        started = time.perf_counter()
        generate(url, folder, args.tickets)
        print(f"generated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    figures = measure(folder, url, args.runs, args.tickets)
    print(f"web inbox, {args.tickets:,} tickets, SQLite, Flask test client "
          f"({platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()})")
    for name, timing in figures["timings"].items():
        print(f"  {name:<34} median {timing['median_ms']:7.1f} ms   p90 {timing['p90_ms']:7.1f} ms")
    flagged = [(name, line) for name, lines in figures["plans"].items() for line in lines
               if line.startswith("FULL SCAN")]
    print("query plans: " + ("no full scan of a big table" if not flagged else
                             f"{len(flagged)} full scans"))
    for name, line in flagged:
        print(f"  {name}: {line.strip()}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
