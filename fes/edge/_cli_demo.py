"""The `fes demo` command: the shop example run on a store, with a report of what happened."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from typing import Any, TextIO

from fes.errors import FesError, FollowerStopped

from ._cli_events import EXIT_STOPPED, table
from ._settings import parse_store_option
from .stores import redact


class Progress:
    """A plain-text progress bar on a stream: redrawn in place on a terminal."""

    def __init__(self, label: str, total: int, out: TextIO, unit: str = "") -> None:
        self.label = label
        self.total = max(total, 1)
        self.out = out
        self.unit = unit
        self.tty = out.isatty()
        self._drawn = -1.0

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and (not self.tty or now - self._drawn < 0.1):
            return
        self._drawn = now
        width = 30
        filled = min(width, width * done // self.total)
        bar = "#" * filled + "." * (width - filled)
        text = f"{self.label:<12} [{bar}] {done}/{self.total}{self.unit}"
        end = "\n" if final else ""
        prefix = "\r" if self.tty else ""
        self.out.write(prefix + text + end)
        self.out.flush()


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from fes.examples import shop

    from ._processes import ProcessRunner
    from ._runners import ThreadedRunner

    temporary: str | None = None
    given = parse_store_option(args.store or ())
    url: str | dict[str, str]
    if given is not None:
        url = given
    else:
        temporary = tempfile.mkdtemp(prefix="fes-demo-")
        url = f"sqlite:///{os.path.join(temporary, 'demo.db')}"
    err = sys.stderr
    count = args.orders
    try:
        print(
            f"fes demo: {count} orders through orders -> reservations -> payments -> orders",
            file=out,
        )
        where = " (a temporary file, deleted at the end)" if temporary else ""
        if isinstance(url, str):
            print(f"store: {redact(url)}{where}\n", file=out)
        else:
            shown = ", ".join(f"{name}={redact(place)}" for name, place in url.items())
            print(f"stores: {shown}\n", file=out)
        started = time.monotonic()
        runner: ThreadedRunner | ProcessRunner
        if args.processes:
            runner = ProcessRunner(
                "fes.examples.shop:system", url, processes=args.processes, poll_interval=0.2
            )
        else:
            runner = ThreadedRunner(shop.system, url, poll_interval=0.2)
        try:
            orders = runner.app("orders")
            # a kept store may hold earlier runs: the tables count the whole store
            earlier = (
                sum(sum(1 for _ in app.log()) for app in runner.applications.values())
                if orders.store.last_position()
                else 0
            )
            reservations = runner.app("reservations")
            chance = random.Random(args.seed)
            skus = ["kettle", "lamp", "mug", "radio", "teapot"]
            for sku in skus:
                reservations.execute(
                    shop.stock, shop.stock_stream(sku), shop.restock, sku, count * 2 // 5 + 5
                )
            bar = Progress("placing", count, err)
            for first in range(0, count, 10):
                # ten new orders per transaction: one atomic append across ten streams
                batch = orders.batch()
                for _ in range(min(10, count - first)):
                    batch.execute(
                        shop.order,
                        orders.new_id(),
                        shop.place,
                        f"customer-{chance.randrange(1, count // 4 + 2)}",
                        chance.choice(skus),
                        chance.randint(1, 3),
                        chance.randint(10, 700) * 100,
                    )
                orders.commit(batch)
                done = min(first + 10, count)
                bar.update(done, final=done == count)
            placed_in = time.monotonic() - started
            statuses = runner.view("orders", "statuses")
            bar = Progress("processing", count, err, " settled")
            begun = time.monotonic()
            runner.start()
            while True:
                state = statuses.state()
                settled = state.get("paid", 0) + state.get("cancelled", 0)
                bar.update(settled)
                try:
                    if settled >= count and runner.wait_until_quiet(timeout=0.5):
                        break
                except FollowerStopped:
                    break  # reported below, and the exit code says so
                if runner.errors:
                    break
                if time.monotonic() - begun > args.timeout:
                    raise FesError(f"the demo did not settle in {args.timeout:.0f}s")
                time.sleep(0.05)
            bar.update(settled, final=True)
            processed_in = time.monotonic() - begun
            runner.stop()
            _demo_report(runner, shop, count + len(skus), placed_in, processed_in, out, earlier)
        finally:
            runner.close()
        if temporary:
            print(
                "\nto keep the store and look around: fes demo --store sqlite:///fes-demo.db, "
                "then fes apps --store sqlite:///fes-demo.db",
                file=out,
            )
        return EXIT_STOPPED if runner.errors else 0
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


def _demo_report(
    runner: Any,
    shop: Any,
    inputs: int,
    placed_in: float,
    processed_in: float,
    out: TextIO,
    earlier: int = 0,
) -> None:
    if earlier:
        print(
            f"\nthe store held {earlier:,} events of earlier runs: the tables below "
            "count the whole store",
            file=out,
        )
    scope = " (whole store)" if earlier else ""
    orders_log = runner.app("orders").log()
    status = runner.view("orders", "statuses").state()
    reasons: Counter[str] = Counter()
    for recorded in orders_log:
        if isinstance(recorded.event, shop.OrderCancelled):
            reasons[recorded.event.reason.split(" (")[0].split(":")[0]] += 1
    print(f"\norders by status{scope}", file=out)
    rows: list[tuple[str, int]] = [("paid", status.get("paid", 0))]
    rows.append(("cancelled", status.get("cancelled", 0)))
    rows.extend((f"  {reason}", n) for reason, n in sorted(reasons.items()))
    rows.append(("still open", status.get("placed", 0)))
    table(["status", "orders"], rows, out)

    print(f"\nevents per application{scope}", file=out)
    event_rows = []
    total = 0
    for name, application in runner.applications.items():
        counts = Counter(type(r.event).__name__ for r in application.log())
        total += sum(counts.values())
        for index, (kind, n) in enumerate(sorted(counts.items())):
            event_rows.append((name if index == 0 else "", kind, n))
    table(["application", "event", "count"], event_rows, out)

    print("\nfollowers", file=out)
    follow_rows = []
    for (leader, follower), lag in sorted(runner.lags().items(), key=lambda x: x[0][1]):
        follow_rows.append((follower, leader, lag.tracked, lag.behind))
    table(["follower", "leader", "tracked position", "lag"], follow_rows, out)

    revenue = runner.view("payments", "revenue").state()
    print(f"\nrevenue (view payments/revenue): {revenue / 100:,.2f}", file=out)
    caused = total - earlier - inputs
    rate = caused / processed_in if processed_in else 0.0
    print(
        f"time: placing {placed_in:.2f}s, processing {processed_in:.2f}s: "
        f"{inputs:,} events written by hand caused {caused:,} more "
        f"({rate:,.0f} events/s)",
        file=out,
    )
