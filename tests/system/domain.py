"""Small systems for the runner tests, importable by name from worker processes.

``rally``: two applications hit a ball back and forth (a cycle); a ball
served with ``count`` n bounces n times, each bounce caused by the one
before.  ``tally`` follows both (several leaders) and counts every bounce in
one hot stream with a ``Do`` command, so the commands of one batch must see
the events already pending for that stream.

``pipeline``: ``source`` → ``sink``, one effect per upstream event; events
with ``poison`` set make the sink's policy raise (the ``careful`` variants
handle errors with a directive read from the event itself).

Everything here is pure except the optional slow-down in ``slow_sink``,
which exists to make a batch take a while in the shutdown tests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from attrs import frozen
from pyrsistent import PMap, pmap

import fes

# --- rally: a cycle, plus a follower of two leaders ------------------------------------


@frozen
class Served:
    """A ball enters play and will bounce ``count`` times."""

    count: int


@frozen
class Hit:
    """The ball was hit; ``count`` bounces remain."""

    count: int


@frozen
class Counted:
    """One more bounce was seen; ``total`` counts them all."""

    total: int


def _bounced(state: int, event: Served | Hit) -> int:
    return state + 1


ball: fes.Aggregate[int] = fes.Aggregate(
    "ball", 0, fes.projector((Served, _bounced), (Hit, _bounced)), events=[Served, Hit]
)


def _counted(state: int, event: Counted) -> int:
    return event.total


def count_one(state: int) -> list[Counted]:
    """Count one more bounce; the total depends on the state, pending events included."""
    return [Counted(state + 1)]


counter: fes.Aggregate[int] = fes.Aggregate(
    "counter", 0, fes.projector(_counted), events=[Counted], commands=[count_one]
)


def hit_back(recorded: fes.Recorded[object]) -> list[fes.Intent]:
    """Return the ball while bounces remain."""
    match recorded.event:
        case Served(count=n) | Hit(count=n) if n > 0:
            return [fes.Emit(ball, recorded.stream, [Hit(n - 1)])]
        case _:
            return []


def count_bounces(recorded: fes.Recorded[object]) -> list[fes.Intent]:
    """Count every ball event into one stream."""
    return [fes.Do(counter, "all", count_one)]


def _bounces(totals: PMap[str, int], recorded: fes.Recorded[object]) -> PMap[str, int]:
    return totals.set(recorded.stream, totals.get(recorded.stream, 0) + 1)


#: Events per ball stream in ``left``'s log.
bounces: fes.View[PMap[str, int]] = fes.View("bounces", pmap(), _bounces)

left = fes.App("left", aggregates=[ball], policy=hit_back, views=[bounces])
right = fes.App("right", aggregates=[ball], policy=hit_back)
tally = fes.App("tally", aggregates=[counter], policy=count_bounces)

rally = fes.System(
    [left, right, tally],
    pipes=[["left", "right", "left"], ["left", "tally"], ["right", "tally"]],
)


def expected_rally_events(counts: Sequence[int]) -> tuple[int, int, int]:
    """How many events ``left``, ``right`` and ``tally`` hold after serving ``counts`` in left."""
    left_total = right_total = 0
    for n in counts:
        # served in left, then hits alternate right, left, right, ...
        right_total += (n + 1) // 2
        left_total += 1 + n // 2
    return left_total, right_total, left_total + right_total


# --- pipeline: one effect per upstream event, optionally poisoned ------------------------


@frozen
class Sent:
    """A message; ``poison`` makes the sink's policy raise on it."""

    number: int
    poison: bool = False


@frozen
class Received:
    """The sink saw message ``number``."""

    number: int


def _sent(state: int, event: Sent) -> int:
    return state + 1


def _received(state: int, event: Received) -> int:
    return state + 1


messages: fes.Aggregate[int] = fes.Aggregate(
    "message", 0, fes.projector(_sent), events=[Sent]
)
receipts: fes.Aggregate[int] = fes.Aggregate(
    "receipt", 0, fes.projector(_received), events=[Received]
)


def receive(recorded: fes.Recorded[object]) -> list[fes.Intent]:
    """Record one receipt per message; a poisoned message makes it raise."""
    match recorded.event:
        case Sent(poison=True, number=n):
            raise ValueError(f"message {n} is poisoned")
        case Sent(number=n):
            return [fes.Emit(receipts, f"r-{recorded.stream}", [Received(n)])]
        case _:
            return []


def receive_anything(recorded: fes.Recorded[object]) -> list[fes.Intent]:
    """The fixed policy: poison is no longer a problem."""
    match recorded.event:
        case Sent(number=n):
            return [fes.Emit(receipts, f"r-{recorded.stream}", [Received(n)])]
        case _:
            return []


def slow_receive(recorded: fes.Recorded[object]) -> list[fes.Intent]:
    """Like :func:`receive_anything`, but each event takes 20 ms (for shutdown tests)."""
    time.sleep(0.02)
    return receive_anything(recorded)


source = fes.App("source", aggregates=[messages])
sink = fes.App("sink", aggregates=[receipts], policy=receive)
pipeline = fes.System([source, sink], pipes=[["source", "sink"]])
fixed_pipeline = fes.System(
    [source, fes.App("sink", aggregates=[receipts], policy=receive_anything)],
    pipes=[["source", "sink"]],
)
slow_pipeline = fes.System(
    [source, fes.App("sink", aggregates=[receipts], policy=slow_receive)],
    pipes=[["source", "sink"]],
)


def _count_sent(count: int, recorded: fes.Recorded[object]) -> int:
    """A view counting the messages sent; a poisoned one makes it raise."""
    match recorded.event:
        case Sent(poison=True, number=n):
            raise ValueError(f"view cannot count message {n}")
    return count + 1


def _count_all(count: int, recorded: fes.Recorded[object]) -> int:
    """The fixed view: poison is counted like any message."""
    return count + 1


#: The source keeping a view whose ``apply`` raises on a poisoned message.
viewed = fes.System([fes.App("source", aggregates=[messages],
                             views=[fes.View("sent", 0, _count_sent)])])
fixed_viewed = fes.System([fes.App("source", aggregates=[messages],
                                   views=[fes.View("sent", 0, _count_all)])])


def with_handler(handler: fes.ErrorHandler, policy: fes.Policy = receive) -> fes.System:
    """The pipeline with the sink's errors handled by ``handler``."""
    return fes.System(
        [source, fes.App("sink", aggregates=[receipts], policy=policy, on_error=handler)],
        pipes=[["source", "sink"]],
    )


# --- partitions: one follower's work split by upstream stream -------------------------

#: The fixed pipeline with its sink split in three partitions.
partitioned_pipeline = fes.System(
    [source, fes.App("sink", aggregates=[receipts], policy=receive_anything, partitions=3)],
    pipes=[["source", "sink"]],
)
#: Three partitions counting every message into one stream: they contend for it.
partitioned_tally = fes.System(
    [source, fes.App("tally", aggregates=[counter], policy=count_bounces, partitions=3)],
    pipes=[["source", "tally"]],
)


# --- reserving: a follower whose batches go back to streams they left -------------------


@frozen
class Placed:
    """An order, one line per bin named."""

    bins: tuple[str, ...]


@frozen
class Reserved:
    """Line ``line`` of ``order`` is reserved in this bin."""

    order: str
    line: int


@frozen
class Noted:
    """The order's line ``line`` was reserved (in the order the reservations were logged)."""

    line: int


def _placed(state: tuple[str, ...], event: Placed) -> tuple[str, ...]:
    return event.bins


def _one_more(state: int, event: Reserved | Noted) -> int:
    return state + 1


def place(state: tuple[str, ...], bins: tuple[str, ...]) -> list[Placed]:
    return [Placed(tuple(bins))]


order_book: fes.Aggregate[tuple[str, ...]] = fes.Aggregate(
    "order", (), fes.projector(_placed), events=[Placed], commands=[place]
)
bin_: fes.Aggregate[int] = fes.Aggregate("bin", 0, fes.projector(_one_more), events=[Reserved])
notes: fes.Aggregate[int] = fes.Aggregate("note", 0, fes.projector(_one_more), events=[Noted])


def reserve_lines(recorded: fes.Recorded[Placed]) -> list[fes.Emit]:
    """One reservation per line, each in its bin's stream: a batch goes back and forth."""
    return [
        fes.Emit(bin_, f"bin-{name}", [Reserved(recorded.stream, line)])
        for line, name in enumerate(recorded.event.bins)
    ]


def note_reservation(recorded: fes.Recorded[Reserved]) -> list[fes.Emit]:
    """The order's notes, in the order the reservations reached the log."""
    return [fes.Emit(notes, f"notes-{recorded.event.order}", [Noted(recorded.event.line)])]


reserving = fes.System(
    [
        fes.App("orders", aggregates=[order_book]),
        fes.App("stock", aggregates=[bin_], policy=reserve_lines),
        fes.App("notes", aggregates=[notes], policy=note_reservation),
    ],
    pipes=[["orders", "stock", "notes"]],
)
