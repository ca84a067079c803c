"""Instructions per event, counted by callgrind: a measure that does not swing with the machine.

Timers on a shared virtual machine swing by a fifth from one minute to the
next, which hides any change worth less than that.  Valgrind's callgrind
counts the instructions a process runs (user space only: the kernel's work,
a flush, is not counted), the same from one run to the next to about
0.2 %.  Each contender runs its workload at two sizes in a process of its
own under callgrind, and the difference of the two counts, divided by the
difference of the sizes, is what one more event costs: start-up, imports and
set-up cancel out.  For the follower, the backlog it catches up on is
written by the same process, so its cost is counted at both sizes without
the catch-up and taken off.

Run::

    .venv/bin/python -m benchmarks.instructions            # every workload (about 10 minutes)
    .venv/bin/python -m benchmarks.instructions W2 W4F     # some of them

It needs ``valgrind`` (``apt-get install valgrind``).  The SQLite files are
made on ``/dev/shm`` with ``synchronous=NORMAL``: what is counted is the
CPU's work, not the disk's.  The workloads are those of W1, W2 and W4
(see their modules), with the same contenders, and W5's writer
(``W5W``): for it the run starts a throwaway PostgreSQL server (as the
tests do, see ``tests/pgserver.py``), and counts the client's work only;
the server's is another process's.  Over PostgreSQL a round trip costs
the client more CPU than its instructions tell (system calls, and on a
virtual machine the switches between processes), so W5W counts what fes
adds to the same round trips, not all of what a writer spends.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: The two sizes each contender runs at.
SMALL, LARGE = 1_000, 6_000

#: What each contender is, as the report names it.
NAMES = {
    "fes": "fes",
    "raw": "raw sqlite3 (the same SQL)",
    "hand": "raw sqlite3 calling the domain by hand",
    "psycopg": "raw psycopg (the same transactions)",
}

#: Each workload's contenders, as this module's child runs them.
WORKLOADS: dict[str, tuple[str, tuple[str, ...]]] = {
    "W1": ("one command, one commit, per new stream", ("fes", "raw", "hand")),
    "W2": ("commands into one batch on one stream, one commit", ("fes", "raw", "hand")),
    "W4L": ("W4's leader: 50 new streams per commit", ("fes", "raw")),
    "W4F": ("W4's follower catching up on a backlog", ("fes", "raw", "hand")),
    "W5W": ("W5's writer: one command, one transaction, per new stream, over PostgreSQL",
            ("fes", "psycopg")),
}

#: The workloads that need a PostgreSQL server (the parent starts one).
POSTGRES = {"W5W"}

#: Where a PostgreSQL workload's children find their database.
_URL_VARIABLE = "FES_BENCH_INSTRUCTIONS_URL"

_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _child(workload: str, who: str, n: int, follow: bool) -> None:
    """Run one contender's workload at size ``n`` in this process (under callgrind)."""
    directory = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        if workload == "W1":
            from .w1_streams import FesStreams, RawDomainStreams, RawStreams

            kinds = {"fes": FesStreams, "raw": RawStreams, "hand": RawDomainStreams}
            contender = kinds[who](directory, synchronous="NORMAL")
            contender.create(n)
            contender.close()
        elif workload == "W2":
            _w2(directory, who, n)
        elif workload == "W4L":
            _w4_leader(directory, who, n)
        elif workload == "W5W":
            _w5_writer(os.environ[_URL_VARIABLE], who, n)
        else:
            _w4_follower(directory, who, n, follow)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _w2(directory: Path, who: str, n: int) -> None:
    from .raw import RawStore, connect
    from .w2_append import TEACHING_SCHOOL, fes_commands, raw_append, raw_commands

    if who == "fes":
        from fes.edge import Application

        url = f"sqlite:///{directory}/fes.db?synchronous=NORMAL"
        with Application(TEACHING_SCHOOL, store=url) as app:
            fes_commands(app, n)
        return
    conn = connect(directory / "raw.db", "NORMAL")
    (raw_commands if who == "hand" else raw_append)(RawStore(conn, "school").create(), n)
    conn.close()


def _w4_leader(directory: Path, who: str, n: int) -> None:
    from . import w4_pipeline as w4

    if who == "fes":
        from fes.edge import Application

        url = f"sqlite:///{directory}/fes.db?synchronous=NORMAL"
        with Application(w4.SCHOOL, store=url) as leader:
            w4._fes_lead(leader, n, 50)
        return
    leader, _ = w4._raw_leader(directory / "raw.db")
    leader.conn.execute("PRAGMA synchronous = NORMAL")
    for done in range(0, n, 50):
        w4._register(leader, min(50, n - done))
    leader.conn.close()


def _w5_writer(url: str, who: str, n: int) -> None:
    """W5's writer: ``n`` commands, each its own transaction on a new stream."""
    if who == "fes":
        from fes.edge import Application
        from fes.examples.dogs import dogs, register

        from .domains import SCHOOL

        with Application(SCHOOL, store=url) as app:
            for _ in range(n):
                app.execute(dogs, app.new_id(), register, "Fido")
        return
    import psycopg

    from .w5_raw import raw_registrar

    with psycopg.connect(url, autocommit=True) as conn:
        register = raw_registrar(conn, lock=True)
        for _ in range(n):
            register()


def _w4_follower(directory: Path, who: str, n: int, follow: bool) -> None:
    from . import w4_pipeline as w4

    if who == "fes":
        from fes.edge import SyncRunner

        url = w4.fes_backlog(directory, n)
        if follow:
            with SyncRunner(w4.SYSTEM, store=url) as runner:
                runner.run_until_quiet()
        return
    path = directory / "raw.db"
    leader, _ = w4._raw_leader(path)
    for done in range(0, n, w4.BACKLOG_CHUNK):
        w4._register(leader, min(w4.BACKLOG_CHUNK, n - done))
    leader.conn.close()
    if follow:
        follower = (w4.DomainRawFollower if who == "hand" else w4.RawFollower)(path)
        while follower.step():
            pass
        follower.close()


def count(workload: str, who: str, n: int, follow: bool = True) -> int:
    """The instructions a child process running ``who``'s ``workload`` at ``n`` counted."""
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, "-m", "benchmarks.instructions", "--child", workload, who, str(n),
    ]
    if not follow:
        command.append("--backlog-only")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{workload} {who} at {n} failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_event(workload: str, who: str) -> float:
    """Instructions one more event costs ``who`` in ``workload``."""
    sizes = [(SMALL, True), (LARGE, True)]
    if workload == "W4F":
        sizes += [(SMALL, False), (LARGE, False)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = list(pool.map(lambda size: count(workload, who, *size), sizes))
    spent = counts[1] - counts[0]
    if workload == "W4F":
        spent -= counts[3] - counts[2]  # the backlog's own writing
    return spent / (LARGE - SMALL)


def _serve_postgres() -> None:
    """Start a throwaway PostgreSQL server for this run, with W5's tables; tell the children.

    It runs with ``fsync=off``: what is counted is the client's work (the
    server is another process, not under callgrind).
    """
    import atexit

    from fes.edge import Application

    from .domains import REGISTRY, SCHOOL
    from .w5_postgres import _pg_server

    server = _pg_server()
    server.start()
    atexit.register(server.stop)
    url = server.create_database("instructions")
    for app in (SCHOOL, REGISTRY):  # the tables, before the children write to them
        Application(app, store=url).close()
    os.environ[_URL_VARIABLE] = url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workloads", nargs="*", help=f"any of {', '.join(WORKLOADS)} (all)")
    parser.add_argument("--child", nargs=3, metavar=("WORKLOAD", "WHO", "N"))
    parser.add_argument("--backlog-only", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        workload, who, n = args.child
        _child(workload, who, int(n), not args.backlog_only)
        return
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {unknown[0]!r}: choose from {', '.join(WORKLOADS)}")
    if shutil.which("valgrind") is None:
        raise SystemExit("benchmarks.instructions needs valgrind (apt-get install valgrind)")
    chosen = args.workloads or list(WORKLOADS)
    if POSTGRES & set(chosen):
        _serve_postgres()
    for workload in chosen:
        title, contenders = WORKLOADS[workload]
        print(f"{workload}  {title}: instructions per event (callgrind)", flush=True)
        costs = {who: per_event(workload, who) for who in contenders}
        for who, cost in costs.items():
            print(f"    {NAMES[who]:<40} {cost:>10,.0f}", flush=True)
        for who in contenders[1:]:
            print(f"    fes / {NAMES[who]} = {costs['fes'] / costs[who]:.2f}", flush=True)


if __name__ == "__main__":
    main()
