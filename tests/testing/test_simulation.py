"""Whole-system simulation: sound systems pass under faults, planted bugs are caught and shrunk."""

from __future__ import annotations

import re
from typing import Any

import pytest
from attrs import evolve, frozen
from hypothesis import find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample
from system import domain

import fes
from fes._ids import STREAM_ID_RULE
from fes.edge import Application, Batch
from fes.edge.stores import Tracking
from fes.examples import shop
from fes.testing.simulation import (
    FAULTS,
    Conflict,
    Crash,
    Hold,
    Input,
    Redeliver,
    Run,
    SystemState,
    check_system,
    schedules,
    simulate,
    units,
)
from fes.testing.simulation._check import _differences

#: A small budget without the example database, so each run starts afresh.
BUDGET = settings(max_examples=60, database=None, deadline=None)


# --- the shop: inputs and invariants ------------------------------------------------

SKUS = st.sampled_from(["apple", "pear"])


def shop_inputs(restocks: list[tuple[str, int]], orders: list[tuple[str, int, int]]) -> list[Input]:
    """Restock first, then place one order per tuple, each on its own stream."""
    return [
        Input("reservations", "stock", shop.stock_stream(sku), "restock", (sku, quantity))
        for sku, quantity in restocks
    ] + [
        Input("orders", shop.order, f"order-{n}", "place", ("ann", sku, quantity, amount))
        for n, (sku, quantity, amount) in enumerate(orders)
    ]


SHOP_INPUTS = st.builds(
    shop_inputs,
    st.lists(st.tuples(SKUS, st.integers(1, 4)), max_size=2),
    st.lists(
        st.tuples(SKUS, st.integers(1, 3), st.sampled_from([100, shop.CARD_LIMIT + 1])),
        min_size=1,
        max_size=4,
    ),
)

#: Inputs of every path through the shop: paid, out of stock, declined.
EXAMPLE = shop_inputs(
    [("apple", 3)], [("apple", 2, 100), ("apple", 2, 100), ("apple", 1, shop.CARD_LIMIT + 1)]
)


def every_order_is_paid_or_cancelled(final: SystemState) -> bool:
    """Once quiet, no order is left open."""
    orders = final.states("orders", shop.order).values()
    return all(o.status in ("paid", "cancelled") for o in orders)


def stock_is_held_for_paid_orders_only(final: SystemState) -> None:
    """Each product holds stock exactly for its paid orders, and never goes below zero."""
    paid = {s for s, o in final.states("orders", shop.order).items() if o.status == "paid"}
    for stream, stock in final.states("reservations", shop.stock).items():
        assert stock.available >= 0, f"{stream} has {stock.available} units"
        sku_paid = {s for s in paid if shop.stock_stream(final.get("orders", "order", s).sku)
                    == stream}
        assert set(stock.held) == sku_paid, f"{stream} holds {dict(stock.held)}, paid {sku_paid}"


def revenue_is_what_was_paid(final: SystemState) -> bool:
    """The revenue view adds up the amounts of the paid orders."""
    paid = [o.amount for o in final.states("orders", shop.order).values() if o.status == "paid"]
    return bool(final.view("payments", "revenue") == sum(paid))


SHOP_INVARIANTS = [
    every_order_is_paid_or_cancelled,
    stock_is_held_for_paid_orders_only,
    revenue_is_what_was_paid,
]


# --- planted bugs: effects recorded without tracking ---------------------------------


class SplitCommit(Application):
    """A broken edge: records a batch's events, then its tracking in a second transaction."""

    def commit(self, batch: Batch, *, tracking: Tracking | None = None) -> list[fes.Recorded[Any]]:
        """Commit the events alone, then the tracking position alone."""
        recorded = super().commit(batch)
        if tracking is not None:
            super().commit(self.batch(), tracking=tracking)
        return recorded


class RecordsAnyway(Application):
    """A broken edge: when tracking refuses a batch, it records the events without it."""

    def commit(self, batch: Batch, *, tracking: Tracking | None = None) -> list[fes.Recorded[Any]]:
        """Commit; on a refused tracking position, append the events at the current versions."""
        try:
            return super().commit(batch, tracking=tracking)
        except fes.errors.DuplicateTracking:
            again = self.batch()
            for stream, slot in batch.pending.items():
                for item, meta in zip(slot.events, slot.metadata, strict=True):
                    again.emit(slot.aggregate, stream, [item], meta)
            super().commit(again)
            raise


# --- a counter: a follower that is not idempotent by itself --------------------------


@frozen
class Registered:
    """A dog joined."""

    name: str


@frozen
class Counted:
    """The counter saw a registration."""

    name: str


def register(dog: Registered | None, name: str) -> list[Registered]:
    """Register a dog (every time: the counter must count each registration once)."""
    return [Registered(name)]


dogs = fes.Aggregate("dog", None, lambda state, event: event, events=[Registered],
                     commands=[register])
tally = fes.Aggregate("tally", 0, lambda total, event: total + 1, events=[Counted])


def count(recorded: fes.Recorded[Registered]) -> list[fes.Intent]:
    """Append one Counted per registration: a duplicate delivery would count twice."""
    return [fes.Emit(tally, "all", [Counted(recorded.event.name)])]


counting = fes.System(
    [fes.App("school", aggregates=[dogs]), fes.App("counter", aggregates=[tally], policy=count)],
    pipes=[["school", "counter"]],
)
REGISTRATIONS = st.lists(
    st.sampled_from("abc").map(lambda n: Input("school", "dog", f"dog-{n}", "register", (n,))),
    min_size=1,
    max_size=4,
)

# two schools counted into one stream: the order of the counts depends on timing
merging = fes.System(
    [
        fes.App("north", aggregates=[dogs]),
        fes.App("south", aggregates=[dogs]),
        fes.App("counter", aggregates=[tally], policy=count),
    ],
    pipes=[["north", "counter"], ["south", "counter"]],
)
BOTH_SCHOOLS = st.lists(
    st.tuples(st.sampled_from(["north", "south"]), st.sampled_from("ab")).map(
        lambda t: Input(t[0], "dog", f"dog-{t[1]}", "register", (f"{t[0]}-{t[1]}",))
    ),
    min_size=2,
    max_size=4,
)


def steps_in(message: str, heading: str) -> list[str]:
    """The numbered lines under ``heading`` in a report."""
    lines = message.split(f"\n{heading} (", 1)[1].splitlines()[1:]
    found = []
    for line in lines:
        numbered = re.match(r"  \d+\. (.*)$", line)
        if numbered is None:
            break
        found.append(numbered.group(1))
    return found


def failure(system: fes.System, inputs: st.SearchStrategy[Any], *args: Any, **options: Any) -> str:
    """The message check_system fails with (the test fails if it does not fail)."""
    options.setdefault("settings", BUDGET)
    with pytest.raises(AssertionError) as caught:
        check_system(system, inputs, *args, **options)
    return str(caught.value)


# --- sound systems pass --------------------------------------------------------------


def test_the_shop_passes_under_every_fault() -> None:
    """Generated orders under generated faulty schedules end as without faults; invariants hold."""
    totals = check_system(shop.system, SHOP_INPUTS, SHOP_INVARIANTS, settings=BUDGET, seed=1)
    assert totals["runs"] == BUDGET.max_examples
    struck = {"crashes", "redeliveries", "duplicates refused", "rivals", "holds"}
    assert all(totals[name] > 0 for name in struck), totals


def test_the_shop_passes_with_snapshots_and_a_cache() -> None:
    """Snapshots and a state cache in every application change nothing under faults."""
    for seed in range(8):
        result = simulate(
            shop.system, inputs=EXAMPLE, seed=seed, invariants=SHOP_INVARIANTS,
            options={"snapshot_every": 2, "cache_size": 16},
        )
        result.check()


def test_concurrent_writes_to_one_stream_are_refused_and_redone() -> None:
    """Two leaders' followers writing one stream meet real version conflicts and recover."""
    only_conflicts = check_system(
        merging, BOTH_SCHOOLS, faults={"conflict"}, ordered=False, settings=BUDGET, seed=2
    )
    assert only_conflicts["conflicts refused"] > 0, only_conflicts
    assert only_conflicts["crashes"] == only_conflicts["holds"] == 0


def test_timing_dependent_stream_order_is_reported_unless_unordered() -> None:
    """Counts from two leaders land in one stream in timing order: ordered=True reports it."""
    message = failure(merging, BOTH_SCHOOLS, faults=False, seed=3)
    assert "counter/all: 2 events where the fault-free run has 2" in message
    schedule = steps_in(message, "schedule")
    assert 1 <= len(schedule) <= 2, message
    unordered = check_system(merging, BOTH_SCHOOLS, faults=False, ordered=False,
                             settings=BUDGET, seed=3)
    assert unordered["runs"] == BUDGET.max_examples


# --- planted bugs are caught, with a shrunk schedule -----------------------------------


def test_a_commit_without_tracking_is_caught_in_the_shop() -> None:
    """Effects committed apart from their tracking duplicate on a crash: one input, one crash."""
    message = failure(shop.system, SHOP_INPUTS, SHOP_INVARIANTS, application=SplitCommit, seed=4)
    assert message.startswith("the simulated run differs from the fault-free run")
    assert len(steps_in(message, "inputs")) == 1, message
    (step,) = steps_in(message, "schedule")
    assert "crashing before it is recorded -> crashed before recording, restarted" in step
    assert "where the fault-free run has 1" in message
    # the report reads in order: inputs, the steps, then what differed
    assert message.index("inputs (") < message.index("schedule (") < message.index("differences:")


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ({"crash"}, ["counter<-school: a batch of up to 1, crashing before it is recorded"]),
        ({"redeliver"}, ["counter<-school: a batch of up to 1",
                         "counter<-school: its last recorded batch delivered again"]),
        ({"conflict"}, ["counter<-school: a batch of up to 1, while another instance of "
                        "counter<-school commits first"]),
    ],
    ids=["crash", "redeliver", "conflict"],
)
def test_each_fault_catches_an_edge_that_records_without_tracking(
    faults: set[str], expected: list[str]
) -> None:
    """Crashes, redeliveries and rival instances each expose effects recorded without tracking."""
    application = SplitCommit if faults == {"crash"} else RecordsAnyway
    message = failure(counting, REGISTRATIONS, application=application, faults=faults, seed=5)
    schedule = steps_in(message, "schedule")
    assert len(schedule) == len(expected), message
    for step, start in zip(schedule, expected, strict=True):
        assert step.startswith(start), message
    assert "counter/all: 2 events where the fault-free run has 1" in message
    assert "the effects of school:dog-a@1 differ" in message


def test_a_broken_invariant_is_shrunk_to_one_input_and_no_step() -> None:
    """An invariant the shop does not keep fails on the smallest run, named in the report."""

    def every_order_is_paid(final: SystemState) -> bool:
        return all(o.status == "paid" for o in final.states("orders", shop.order).values())

    message = failure(shop.system, SHOP_INPUTS, [every_order_is_paid], seed=6)
    assert message.startswith("the simulated run breaks 1 invariant")
    assert len(steps_in(message, "inputs")) == 1
    assert "schedule (0 steps)" in message
    assert "  - every_order_is_paid failed" in message


# --- determinism ---------------------------------------------------------------------


def test_the_same_seed_gives_the_same_run() -> None:
    """Two simulations with one seed agree on schedule, trace, positions and timestamps."""
    first = simulate(shop.system, inputs=EXAMPLE, seed=11)
    again = simulate(shop.system, inputs=EXAMPLE, seed=11)
    other = simulate(shop.system, inputs=EXAMPLE, seed=12)
    assert first.schedule == again.schedule and first.trace == again.trace
    assert first.final.logs == again.final.logs  # every Recorded, position and timestamp
    assert first.counts == again.counts and first.report() == again.report()
    assert other.schedule != first.schedule
    assert first.ok and other.ok


def test_ids_come_from_the_seed() -> None:
    """The applications' id factory counts from the seed: the same seed, the same ids."""
    made: list[str] = []

    def application(app: fes.App, **options: Any) -> Application:
        built = Application(app, **options)
        made.append(built.new_id())
        return built

    simulate(counting, inputs=[], seed=7, application=application, schedule=[])
    first = list(made)
    made.clear()
    simulate(counting, inputs=[], seed=7, application=application, schedule=[])
    assert made == first and len(set(first)) == len(first)


# --- the schedule's steps do what they say --------------------------------------------


def test_a_held_leader_shows_nothing_new_until_the_hold_ends() -> None:
    """Events a held leader records stay invisible to its followers for the steps held."""
    inputs = shop_inputs([("apple", 1)], [("apple", 1, 100)])
    prompt = simulate(shop.system, inputs=inputs, schedule=[
        Run("reservations<-orders", 4), Run("payments<-reservations", 4)
    ])
    assert prompt.trace == ("processed 1", "processed 2")  # the restock and the reservation
    held = simulate(shop.system, inputs=inputs, schedule=[
        Hold("reservations", 2),
        Run("reservations<-orders", 4),
        Run("payments<-reservations", 4),
        Run("payments<-reservations", 4),
    ])
    # the reservation made while the hold lasts reaches payments only once it ends
    assert held.trace == ("held at position 1", "processed 1", "processed 1", "processed 1")
    assert held.counts["holds"] == 1
    assert prompt.ok and held.ok


def test_a_crash_loses_the_batch_and_the_restart_redoes_it() -> None:
    """A crashed batch is not recorded; the restarted follower processes it again, once."""
    inputs = [Input("school", "dog", "dog-a", "register", ("a",))]
    result = simulate(counting, inputs=inputs, schedule=[Crash("counter<-school"),
                                                         Run("counter<-school")])
    assert result.trace == ("crashed before recording, restarted", "processed 1")
    assert result.counts["crashes"] == 1
    assert result.final.events("counter", "all") == [Counted("a")]
    assert result.ok


def test_a_redelivered_batch_is_refused_by_tracking() -> None:
    """Delivering a recorded batch again is refused by the store and changes nothing."""
    inputs = [Input("school", "dog", f"dog-{n}", "register", (n,)) for n in "ab"]
    result = simulate(counting, inputs=inputs, schedule=[
        Run("counter<-school", 2), Redeliver("counter<-school", 2)
    ])
    assert result.trace == ("processed 2", "processed 0, 1 stale commit refused")
    assert result.counts["redeliveries"] == 1 and result.counts["duplicates refused"] == 1
    assert result.final.events("counter", "all") == [Counted("a"), Counted("b")]
    assert result.ok


def test_a_rival_view_instance_saves_first_and_the_slower_one_reloads() -> None:
    """Two instances of one view: the slower save is refused and the view folds each event once."""
    inputs = shop_inputs([("apple", 2)], [("apple", 1, 100), ("pear", 1, 100)])
    schedule = [Conflict("orders/statuses", "orders/statuses", 1),
                Redeliver("orders/statuses", 2)]
    result = simulate(shop.system, inputs=inputs, schedule=schedule, invariants=SHOP_INVARIANTS)
    assert result.counts["rivals"] == 1 and result.counts["duplicates refused"] == 2
    assert result.final.view("orders", "statuses") == result.expected.view("orders", "statuses")
    assert result.ok


# --- policy errors and skips ---------------------------------------------------------


def picky(recorded: fes.Recorded[Registered]) -> list[fes.Intent]:
    """Count every dog but Rex, on whose registration it raises."""
    if recorded.event.name == "rex":
        raise ValueError("no rex")
    return count(recorded)


@pytest.mark.parametrize(
    "handler",
    [fes.stop_on_error, lambda *_: fes.Skip(), fes.retry_then_stop(attempts=2, delay=0.01)],
    ids=["stop", "skip", "retry"],
)
def test_policy_errors_end_as_in_the_fault_free_run(handler: fes.ErrorHandler) -> None:
    """A follower that stops, or skips, on a failing event ends as it does without faults."""
    system = fes.System(
        [fes.App("school", aggregates=[dogs]),
         fes.App("counter", aggregates=[tally], policy=picky, on_error=handler)],
        pipes=[["school", "counter"]],
    )
    inputs = [Input("school", "dog", f"dog-{n}", "register", (n,)) for n in ("a", "rex", "b")]
    # every failure met while draining
    simulate(system, inputs=inputs, schedule=[], expect_stops=True).check()
    for seed in range(10):
        result = simulate(system, inputs=inputs, seed=seed, expect_stops=True)
        result.check()
    if getattr(handler, "__name__", "") == "<lambda>":  # skip
        assert result.final.errors == {}
        assert len(result.final.events("counter", "fes.skipped")) == 1
    else:  # stop at once, or after retrying
        assert result.final.errors == {"counter": "on school: ValueError: no rex"}
        # the same stop in both runs is no difference, but the report says it
        report = result.report()
        assert "but followers stopped on a policy error in both" in report.splitlines()[0]
        assert "  - counter: on school: ValueError: no rex" in report


def per_name(recorded: fes.Recorded[Registered]) -> list[fes.Intent]:
    """Count each name in a stream of its own, its id built from the name (a bug)."""
    return [fes.Emit(tally, f"tally-{recorded.event.name}", [Counted(recorded.event.name)])]


def test_check_system_finds_a_stream_id_no_store_keeps() -> None:
    """A policy building stream ids from data fails the check on the one input that breaks it.

    A dog's name with a NUL makes an id PostgreSQL's text cannot hold: every
    store refuses it, the follower stops, and the check shrinks to that name.
    """
    system = fes.System(
        [fes.App("school", aggregates=[dogs]),
         fes.App("counter", aggregates=[tally], policy=per_name)],
        pipes=[["school", "counter"]],
    )
    names = st.sampled_from(["a", "b", "c\x00"]).map(
        lambda n: Input("school", "dog", f"dog-{n[0]}", "register", (n,))
    )
    with pytest.raises(AssertionError) as failed:
        check_system(
            system, st.lists(names, min_size=1, max_size=3),
            settings=settings(max_examples=50, database=None), seed=0,
        )
    report = str(failed.value)
    assert "inputs (1):\n  1. school/dog-c: register('c\\x00')" in report, report
    assert (
        "  - counter: on school: EncodeError: a batch of 'counter' acts on a stream no store "
        "can keep: " + STREAM_ID_RULE + ", not 'tally-c\\x00'"
    ) in report, report
    # without the NUL the same policy passes
    fine = st.lists(names.filter(lambda i: "\x00" not in i.args[0]), min_size=1, max_size=3)
    assert check_system(system, fine, settings=settings(max_examples=5, database=None), seed=0)


def closed(dog: Registered | None, name: str) -> list[Registered]:
    """A school that refuses every registration."""
    raise fes.Rejected("the school is closed")


#: Ten runs: what the checks of coverage count, exactly.
TEN = settings(max_examples=10, database=None, deadline=None)


def test_check_system_fails_when_no_input_was_accepted() -> None:
    """Every registration refused: the runs exercised nothing, and say why."""
    refused = st.lists(
        st.just(Input("school", "dog", "dog-a", closed, ("a",))), min_size=1, max_size=3
    )
    with pytest.raises(AssertionError) as failed:
        check_system(counting, refused, settings=TEN, seed=0)
    head, stored, command, advice = str(failed.value).splitlines()
    assert head == "check_system exercised too little to pass, in 10 run(s):"
    assert stored == (
        "  no input stored an event: every command was refused, or decided no events"
    )
    assert re.fullmatch(
        r"  command 'closed' \(school/dog\) was never accepted: refused \d+ time\(s\), "
        r"mostly Rejected: the school is closed", command
    ), command
    assert advice == (
        "Give inputs that reach all of it; a command the domain refuses on purpose is named "
        "with why in rare={'name': 'why it is refused'}."
    ), advice


def test_check_system_fails_when_a_command_is_never_accepted_unless_rare() -> None:
    """Registrations accepted, but the closed school's never: that command was not exercised.

    (A trial's cancel, given a slot never booked, was refused in every run and
    check_system passed.)  Named rare, it is refused on purpose, and passes.
    """
    both = st.lists(
        st.sampled_from([
            Input("school", "dog", "dog-a", "register", ("a",)),
            Input("school", "dog", "dog-b", closed, ("b",)),
        ]),
        min_size=2, max_size=4, unique=True,
    )
    with pytest.raises(AssertionError) as failed:
        check_system(counting, both, settings=TEN, seed=0)
    lines = str(failed.value).splitlines()
    assert len(lines) == 3 and lines[1].startswith(
        "  command 'closed' (school/dog) was never accepted: refused "
    ), lines
    assert lines[1].endswith(" time(s), mostly Rejected: the school is closed"), lines
    excused = {closed: "the school is closed on purpose"}  # a function: dogs does not offer it
    assert check_system(counting, both, settings=TEN, seed=0, rare=excused)["runs"] == 10


@pytest.mark.parametrize(
    "rare, refusal",
    [
        ("closed", "rare= maps each command refused on purpose to why"),  # a str: its letters?
        (["register"], "rare= maps each command refused on purpose to why"),
        ({"closed": "on purpose"}, "rare= names 'closed', which no aggregate of the system "
                                   "offers as a command \\(it offers 'register'\\)"),
        ({"register": " "}, "rare= must give why 'register' is refused on purpose, as a "
                            "non-empty string"),
        # neither a name nor a command's function: it would excuse nothing (a trial's)
        ({Registered: "why"}, "rare= names commands, by name or as the function an input "
                              "gives, not <class"),
        ({1: "why"}, "rare= names commands, by name or as the function an input gives, not 1"),
    ],
)
def test_check_system_refuses_a_rare_that_would_excuse_nothing(rare: Any, refusal: str) -> None:
    """A rare= that is not names with reasons, or names no command, is refused before any run."""
    with pytest.raises(fes.errors.DefinitionError, match=refusal):
        check_system(counting, REGISTRATIONS, settings=TEN, seed=0, rare=rare)


def test_check_system_raises_at_arguments_the_command_does_not_take() -> None:
    """An input whose command cannot take its arguments fails the check, shrunk to it.

    (A trial's wrong-argument input passed: the same command was accepted
    with other inputs, so coverage saw it exercised.)  It is wrong in every
    run, whatever the state, so it is raised, naming the input, and ``rare=``
    does not hide it.
    """
    mixed = st.lists(
        st.sampled_from([
            Input("school", "dog", "dog-a", "register", ("a",)),
            Input("school", "dog", "dog-b", "register", ("b", "extra")),
        ]),
        min_size=1, max_size=4,
    )
    for rare in (None, {"register": "on purpose"}):
        with pytest.raises(fes.errors.CommandMistake) as failed:
            check_system(counting, mixed, settings=TEN, seed=0, rare=rare)
        assert str(failed.value).startswith(
            "command 'register' of aggregate 'dog' takes (name) after the state, but was "
            "given 2 positional arguments"
        ), failed.value
        assert (
            "in the input school/dog-b: register('b', 'extra'): a mistake in the inputs or "
            "the command, not a refusal by the domain"
        ) in failed.value.__notes__
    # simulate() says the same of one run
    with pytest.raises(fes.errors.CommandMistake, match="takes"):
        simulate(counting, inputs=[Input("school", "dog", "dog-b", "register", ())], seed=1)


def rename(dog: Registered, name: str) -> list[Registered]:
    """Rename a registered dog: it needs one (its state is no Registered | None)."""
    return [Registered(name)]


def test_check_system_tells_a_state_the_command_cannot_start_from() -> None:
    """A command given a stream with no events that it needs is a CommandError: said so."""
    untaught = st.just([Input("school", "dog", "dog-a", rename, ("b",))])
    with pytest.raises(AssertionError) as failed:
        check_system(counting, untaught, settings=TEN, seed=0)
    lines = str(failed.value).splitlines()
    assert "mostly CommandError: command 'rename' of aggregate 'dog' expects " in lines[2], (
        lines
    )
    assert lines[3] == (
        "  a CommandError is a mistake in the inputs, not a refusal by the domain: a command "
        "given a stream whose state it cannot start from (rare= does not excuse it)"
    )
    # named rare, it fails all the same (a trial's rare= hid its wrong argument)
    with pytest.raises(AssertionError, match=r"command 'rename' .* mostly CommandError"):
        check_system(counting, untaught, settings=TEN, seed=0, rare={rename: "on purpose"})


def aloof(recorded: fes.Recorded[Registered]) -> list[fes.Intent]:
    """Count only dogs named Rex, which the inputs below never register."""
    return count(recorded) if recorded.event.name == "rex" else []


def test_check_system_fails_when_no_policy_led_to_an_event() -> None:
    """Inputs accepted, but never one the policy acts on: its process was never exercised.

    (A trial's fines policy, acting on late returns only, passed a planted bug
    that way: the strategy never made an on-time return.)
    """
    system = fes.System(
        [fes.App("school", aggregates=[dogs]),
         fes.App("counter", aggregates=[tally], policy=aloof)],
        pipes=[["school", "counter"]],
    )
    with pytest.raises(AssertionError) as failed:
        check_system(system, REGISTRATIONS, settings=TEN, seed=0)
    assert str(failed.value) == (
        "check_system exercised too little to pass, in 10 run(s):\n"
        "  no policy (of 'counter') led to an event: give inputs whose events the policies "
        "act on (or test a policy that acts on none with given_policy)\n"
        "Give inputs that reach all of it."  # rare= excuses commands, not this
    )
    rex = st.just([Input("school", "dog", "dog-r", "register", ("rex",))])
    assert check_system(system, rex, settings=TEN, seed=0)["runs"] >= 1


def test_a_stopped_follower_fails_the_run_unless_expected() -> None:
    """A stop in both runs is no difference, yet it fails: production would stop too.

    (A policy bug that stopped its follower in every run used to pass
    ``check_system``, since the fault-free run stopped the same way.)
    """
    system = fes.System(
        [fes.App("school", aggregates=[dogs]),
         fes.App("counter", aggregates=[tally], policy=picky)],
        pipes=[["school", "counter"]],
    )
    inputs = [Input("school", "dog", f"dog-{n}", "register", (n,)) for n in ("a", "rex")]
    result = simulate(system, inputs=inputs, seed=1)
    assert not result.differences and result.final.errors == result.expected.errors
    assert not result.ok
    head = result.report().splitlines()[0]
    assert head == (
        "the simulated run stops 1 follower on a policy error (see stopped:; pass "
        "expect_stops=True if that is the behaviour under test)"
    ), head
    with pytest.raises(AssertionError, match="stops 1 follower on a policy error"):
        result.check()
    assert simulate(system, inputs=inputs, seed=1, expect_stops=True).ok
    rex = st.just(inputs)
    with pytest.raises(AssertionError, match="counter: on school: ValueError: no rex"):
        check_system(system, rex, settings=settings(max_examples=5, database=None), seed=0)
    runs = check_system(
        system, rex, settings=settings(max_examples=5, database=None), seed=0, expect_stops=True
    )
    assert runs["runs"] >= 1


# --- the final state and the report --------------------------------------------------


def test_the_final_state_reads_streams_states_and_views() -> None:
    """SystemState lists streams by aggregate, folds states, and names a missing view."""
    result = simulate(shop.system, inputs=EXAMPLE, schedule=[])
    final = result.final
    assert final.streams("orders", "order") == ["order-0", "order-1", "order-2"]
    assert final.streams("reservations") == ["stock-apple"]
    assert [o.status for o in final.states("orders", shop.order).values()] == [
        "paid", "cancelled", "cancelled"
    ]
    assert final.events("orders", "order-2")[-1] == shop.OrderCancelled(
        "payment declined: above the card limit of 50000", "apple", True
    )
    assert final.view("payments", "revenue") == 100
    with pytest.raises(fes.errors.ConfigurationError, match="keeps no view 'nope' of 'orders'"):
        final.view("orders", "nope")
    with pytest.raises(fes.errors.SystemDefinitionError, match="no application 'shed'"):
        final.log("shed")


def test_inputs_may_be_tuples_and_refusals_are_reported() -> None:
    """An input given as a tuple runs; a refused command is an outcome, not an error."""
    result = simulate(
        shop.system,
        inputs=[
            ("orders", "order", "order-1", shop.place, ("ann", "apple", 0, 100)),
            ("orders", shop.order, "order-2", "place", ("ann", "apple", 1, 100)),
        ],
        schedule=[Run("reservations<-orders")],
    )
    refusal = "refused (Rejected: an order needs a quantity of at least 1, got 0)"
    assert result.outcomes[0] == refusal
    assert result.outcomes[1].startswith("OrderPlaced(")
    report = result.report()
    assert report.startswith("the simulated run matches the fault-free run")
    assert "  1. orders/order-1: place('ann', 'apple', 0, 100) -> refused" in report
    assert "  1. reservations<-orders: a batch of up to 1 -> processed 1" in report


def test_unknown_units_faults_and_commands_are_refused() -> None:
    """A schedule naming no unit, an unknown fault or command is refused with a clear message."""
    with pytest.raises(fes.errors.ConfigurationError, match="unit 'nope'; this system's units are"):
        simulate(counting, inputs=[], schedule=[Run("nope")])
    with pytest.raises(fes.errors.ConfigurationError, match="unknown fault 'flood'"):
        simulate(counting, inputs=[], faults={"flood"})
    with pytest.raises(fes.errors.ConfigurationError, match="no command 'adopt'"):
        simulate(counting, inputs=[("school", "dog", "d", "adopt", ())], schedule=[])


def test_units_and_schedules_name_the_systems_followers_and_views() -> None:
    """Units are follower<-leader per pipe edge and app/view per view; schedules use them."""
    assert units(shop.system) == (
        "reservations<-orders", "payments<-reservations", "orders<-payments",
        "orders<-reservations", "orders/statuses", "payments/revenue",
    )
    assert {"crash", "redeliver", "conflict", "slow", "down"} == FAULTS
    quick = settings(database=None, max_examples=200)
    two = find(schedules(shop.system), lambda steps: len(steps) == 2, settings=quick)
    assert two == [Run("reservations<-orders", 1)] * 2  # shrunk towards plain first steps
    with pytest.raises(NoSuchExample):
        find(schedules(counting, faults=False), lambda steps: any(
            not isinstance(step, Run) for step in steps), settings=quick)
    lone = fes.System([fes.App("alone", aggregates=[dogs])])
    assert find(schedules(lone), lambda steps: True, settings=quick) == []
    assert simulate(lone, inputs=[("alone", "dog", "d", "register", ("d",))]).ok


def test_invariants_that_raise_are_reported_and_check_raises_the_report() -> None:
    """An invariant failing by AssertionError or by another exception is named with its error."""

    def no_pears(final: SystemState) -> None:
        assert not final.streams("reservations", "stock"), "there is stock"

    def looks_up_a_missing_order(final: SystemState) -> object:
        return final.states("orders", "order")["order-99"]

    result = simulate(shop.system, inputs=EXAMPLE, schedule=[],
                      invariants=[no_pears, looks_up_a_missing_order])
    assert result.failures == (
        "no_pears failed: there is stock",
        "looks_up_a_missing_order raised KeyError: 'order-99'",
    )
    assert not result.ok and not result.differences
    with pytest.raises(AssertionError, match="breaks 2 invariants") as caught:
        result.check()
    assert "invariants:\n  - no_pears failed: there is stock" in str(caught.value)


@frozen
class Ping:
    """One more bounce."""

    n: int


bounces = fes.Aggregate("bounce", 0, lambda total, event: total + 1, events=[Ping])


def bounce(recorded: fes.Recorded[Ping]) -> list[fes.Intent]:
    """Answer every ping with another: a system that never becomes quiet."""
    return [fes.Emit(bounces, "ball", [Ping(recorded.event.n + 1)])]


def test_a_system_that_never_quiets_is_refused() -> None:
    """Two followers that feed each other forever fail after max_rounds, with a clear message."""
    system = fes.System(
        [fes.App("left", aggregates=[bounces], policy=bounce),
         fes.App("right", aggregates=[bounces], policy=bounce)],
        pipes=[["left", "right", "left"]],
    )
    with pytest.raises(AssertionError, match="not quiet after 20 rounds"):
        simulate(system, inputs=[("left", "bounce", "ball", lambda s: [Ping(0)], ())],
                 max_rounds=20)


def test_stopped_followers_that_differ_are_reported() -> None:
    """A follower stopped in one run and not in the other is a difference."""
    result = simulate(shop.system, inputs=EXAMPLE, schedule=[])
    broken = evolve(result.final, errors={"orders": "on payments: ValueError: boom"})
    (line,) = _differences(result.expected, broken, ordered=True)
    assert line == (
        "stopped followers differ: fault-free none, "
        "simulated {'orders': 'on payments: ValueError: boom'}"
    )


def test_a_long_list_of_differences_is_cut_in_the_report() -> None:
    """A report lists the first twelve differences and counts the rest."""
    inputs = [Input("school", "dog", f"dog-{n}", "register", (str(n),)) for n in range(16)]
    schedule = [Crash("counter<-school", 4), Run("counter<-school", 4)] * 4
    result = simulate(counting, inputs=inputs, schedule=schedule, application=SplitCommit)
    assert len(result.differences) == 1 + 16  # the stream, and each registration's effects
    report = result.report()
    assert report.count("\n  - ") == 12
    assert report.endswith("  … and 5 more (see .differences)")


def test_a_partitioned_system_is_refused_with_the_way_out() -> None:
    """The simulator runs one follower per application: it says so for a partitioned one."""
    parts = [evolve(app, partitions=2) if app.name == "payments" else app
             for app in shop.system.apps]
    system = fes.System(parts, pipes=shop.system.pipes)
    with pytest.raises(fes.errors.ConfigurationError, match="'payments' has partitions"):
        simulate(system, inputs=[])


def test_check_system_refuses_a_partitioned_system_before_drawing_an_example() -> None:
    """check_system says so before Hypothesis draws anything: raised inside it, the refusal
    read as a failing example with inputs (a trial's); the way out it names builds."""
    parts = [evolve(app, partitions=2) if app.name == "payments" else app
             for app in shop.system.apps]
    system = fes.System(parts, pipes=shop.system.pipes)
    drawn: list[int] = []

    def draw() -> list[Input]:
        drawn.append(1)
        return []

    with pytest.raises(fes.errors.ConfigurationError) as refused:
        check_system(system, st.builds(draw))
    assert drawn == [] and not getattr(refused.value, "__notes__", [])
    assert str(refused.value) == (
        "the simulator runs each application as one follower, and 'payments' has "
        "partitions; simulate the system with partitions=1: fes.System([attrs.evolve(app, "
        "partitions=1) for app in system.apps], pipes=system.pipes)"
    )
    flat = fes.System([evolve(app, partitions=1) for app in system.apps], pipes=system.pipes)
    assert flat.pipes == system.pipes and {a.partitions for a in flat.apps} == {1}


def test_check_system_keeps_log_order_through_batches_that_go_back_to_a_stream() -> None:
    """A follower whose batches go back to streams they left passes, in log order.

    Each order reserves its lines in bins; a downstream follower notes them
    per order in the order it reads them.  The simulated runs' batches of
    many notifications must log what batches of one do (a new user's
    trial saw ``check_system`` fail on such a system: batches logged their
    events stream by stream).
    """
    orders = st.lists(
        st.lists(st.sampled_from("AB"), min_size=1, max_size=3), min_size=1, max_size=4
    )
    inputs = orders.map(lambda bins: [
        Input("orders", "order", f"order-{n}", "place", (tuple(b),)) for n, b in enumerate(bins)
    ])
    struck = check_system(
        domain.reserving, inputs, settings=settings(max_examples=50, database=None), seed=3
    )
    assert struck["runs"] == 50
