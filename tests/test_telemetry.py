"""Traces and metrics through OpenTelemetry: spans, trace context in metadata, metrics.

The OpenTelemetry SDK is configured once for this module, with an in-memory
span exporter and an in-memory metric reader (the API lets a process set its
providers once); each test clears the exported spans and compares metric
values before and after what it runs.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import fes
from fes.edge import Application, SyncRunner, _telemetry
from fes.errors import ConcurrencyError
from fes.examples import shop

EXPORTER = InMemorySpanExporter()
READER = InMemoryMetricReader()


def forget_providers() -> None:
    """Put OpenTelemetry's global providers back to unset, and fes's instruments.

    The API lets a process set each provider once; tests (and the docs, see
    docs/conftest.py) set their own, so this resets its private globals.
    """
    from opentelemetry.metrics import _internal as metrics_globals
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._PROXY_TRACER_PROVIDER = trace.ProxyTracerProvider()  # type: ignore[attr-defined]
    metrics_globals._METER_PROVIDER = None
    metrics_globals._METER_PROVIDER_SET_ONCE = Once()
    # the proxy hands the next provider every meter made through it before
    metrics_globals._PROXY_METER_PROVIDER = metrics_globals._ProxyMeterProvider()
    _telemetry.reset()


@pytest.fixture(scope="module", autouse=True)
def providers() -> Iterator[None]:
    """The SDK's tracer and meter providers, global for this module's tests."""
    forget_providers()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    meter_provider = MeterProvider(metric_readers=[READER])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    yield
    forget_providers()  # the tests after these run untraced
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture(autouse=True)
def clean_spans() -> None:
    EXPORTER.clear()


def spans(name: str | None = None) -> list[ReadableSpan]:
    found = EXPORTER.get_finished_spans()
    return [s for s in found if name is None or s.name == name]


def the_span(name: str, **attributes: Any) -> ReadableSpan:
    """The one finished span of ``name`` whose attributes include ``attributes``."""
    found = [
        s for s in spans(name)
        if all((s.attributes or {}).get(k) == v for k, v in attributes.items())
    ]
    assert len(found) == 1, [(s.name, s.attributes) for s in spans()]
    return found[0]


def values(name: str) -> dict[frozenset[tuple[str, Any]], float]:
    """Each data point of metric ``name`` now: sums, gauge values, histogram counts."""
    data = READER.get_metrics_data()
    found: dict[frozenset[tuple[str, Any]], float] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    key = frozenset((point.attributes or {}).items())
                    found[key] = getattr(point, "value", None) or getattr(point, "count", 0)
    return found


def value(name: str, **attributes: Any) -> float:
    """The sum of metric ``name``'s points whose attributes include ``attributes``."""
    return sum(
        v for key, v in values(name).items()
        if all((k, attributes[k]) in key for k in attributes)
    )


def lag(where: dict[str, str]) -> float:
    """The one point of the lag gauge for ``where`` (a follower and a leader)."""
    found = [v for key, v in values("fes.follower.lag").items()
             if all((k, where[k]) in key for k in where)]
    assert len(found) == 1, values("fes.follower.lag")
    return found[0]


def context_of(headers: Any) -> trace.SpanContext:
    """The span context a metadata's headers carry, read by the W3C propagator."""
    return trace.get_current_span(propagate.extract(dict(headers))).get_span_context()


def place(runner: SyncRunner, quantity: int = 2, amount: int = 300) -> str:
    runner.app("reservations").execute(
        shop.stock, shop.stock_stream("apple"), shop.restock, "apple", 5
    )
    orders = runner.app("orders")
    order_id = orders.new_id()
    orders.execute(shop.order, order_id, shop.place, "ann", "apple", quantity, amount)
    return order_id


def test_a_command_runs_in_a_span_with_its_application_stream_and_versions() -> None:
    """``execute`` makes one span naming the app, aggregate, stream, versions and outcome."""
    with Application(shop.orders, store="memory://") as orders:
        before = value("fes.commands", **{"fes.app": "orders", "fes.outcome": "accepted"})
        orders.execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100)
        orders.execute(shop.order, "o-1", shop.mark_paid, 100)
    placed = the_span("execute place", **{"fes.stream": "o-1"})
    paid = the_span("execute mark_paid", **{"fes.stream": "o-1"})
    assert placed.attributes == {
        "fes.app": "orders", "fes.aggregate": "order", "fes.stream": "o-1",
        "fes.command": "place", "fes.outcome": "accepted", "fes.events": 1,
        "fes.version.expected": 0, "fes.version": 1, "fes.position": 1,
    }
    assert (paid.attributes or {})["fes.version.expected"] == 1
    assert (paid.attributes or {})["fes.version"] == 2
    assert placed.status.status_code is StatusCode.UNSET
    after = value("fes.commands", **{"fes.app": "orders", "fes.outcome": "accepted"})
    assert after - before == 2


def test_a_commands_events_carry_its_trace_context_in_their_metadata() -> None:
    """The stored metadata holds the W3C ``traceparent`` of the command's span."""
    with Application(shop.orders, store="memory://") as orders:
        orders.execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100,
                       metadata=fes.Metadata(correlation_id="c-1", headers={"who": "ann"}))
        [stored] = orders.stream("o-1")
    span = the_span("execute place")
    headers = stored.metadata.headers
    assert set(headers) >= {"traceparent", "who"} and headers["who"] == "ann"
    assert stored.metadata.correlation_id == "c-1"
    carried = context_of(headers)
    assert (carried.trace_id, carried.span_id) == (span.context.trace_id, span.context.span_id)


def test_a_command_inside_a_span_of_the_program_joins_its_trace() -> None:
    """A command executed under the program's own span is that span's child."""
    tracer = trace.get_tracer("a program")
    with (Application(shop.orders, store="memory://") as orders,
          tracer.start_as_current_span("checkout") as outer):
        orders.execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100)
    span = the_span("execute place")
    assert span.parent is not None and span.parent.span_id == outer.get_span_context().span_id
    assert span.context.trace_id == outer.get_span_context().trace_id


def test_a_rejected_command_is_an_outcome_recorded_on_its_span() -> None:
    """A refusal is counted and recorded as an exception event, not as a failed span."""
    with Application(shop.orders, store="memory://") as orders:
        orders.execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100)
        before = value("fes.commands", **{"fes.app": "orders", "fes.outcome": "rejected"})
        with pytest.raises(fes.Rejected, match="placed already"):
            orders.execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100)
        assert len(orders.stream("o-1")) == 1
    placed = [s for s in spans("execute place")]
    assert [(s.attributes or {})["fes.outcome"] for s in placed] == ["accepted", "rejected"]
    rejected = placed[1]
    assert "fes.events" not in (rejected.attributes or {})
    assert [e.name for e in rejected.events] == ["exception"]
    assert (rejected.events[0].attributes or {})["exception.type"].endswith("Rejected")
    assert rejected.status.status_code is StatusCode.UNSET
    after = value("fes.commands", **{"fes.app": "orders", "fes.outcome": "rejected"})
    assert after - before == 1


def test_a_command_that_keeps_conflicting_is_a_conflict_and_a_failed_span() -> None:
    """After its retries, a conflicting command's span says conflict, with an error status."""
    with Application(shop.orders, store="memory://", retries=0) as orders:
        orders.execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100)

        def pay_while_another_pays(order: shop.Order, amount: int) -> list[shop.OrderPaid]:
            # a rival writer appends to the stream between this load and its append
            orders.store.append([_rival_row(orders, "o-1", 2)])
            return shop.mark_paid(order, amount)

        with pytest.raises(ConcurrencyError):
            orders.execute(shop.order, "o-1", pay_while_another_pays, 100)
    span = the_span("execute pay_while_another_pays")
    assert (span.attributes or {})["fes.outcome"] == "conflict"
    assert span.status.status_code is StatusCode.ERROR
    assert value("fes.commands", **{"fes.app": "orders", "fes.outcome": "conflict"}) >= 1


def _rival_row(application: Application, stream: str, version: int) -> Any:
    from fes.edge.stores._base import new_event

    topic, payload = application.codec.encode(shop.OrderPaid(1), stream=stream, version=version)
    return new_event((stream, version, topic, payload, 0, None))


def test_a_follower_batch_runs_in_a_span_linked_to_the_commands_it_follows() -> None:
    """One span per batch: follower, leader, positions, notifications, events written, links."""
    with SyncRunner(shop.system, store="memory://") as runner:
        place(runner)
        runner.run_until_quiet()
    command = the_span("execute place")
    batch = the_span("follow orders", **{"fes.follower": "reservations", "fes.position.from": 0})
    assert batch.attributes == {
        "fes.app": "reservations", "fes.follower": "reservations", "fes.leader": "orders",
        "fes.position.from": 0, "fes.notifications.read": 1, "fes.notifications": 1,
        "fes.position.to": 1, "fes.events": 1, "fes.outcome": "processed",
    }
    assert [link.context.span_id for link in batch.links] == [command.context.span_id]
    assert (batch.links[0].attributes or {})["fes.position"] == 1


def test_one_order_is_one_trace_through_every_application() -> None:
    """orders -> reservations -> payments -> orders: each effect's span is the cause's child."""
    with SyncRunner(shop.system, store="memory://") as runner:
        order_id = place(runner)
        runner.run_until_quiet()
        [reserved] = [r for r in runner.app("reservations").log()
                      if isinstance(r.event, shop.StockReserved)]
        [taken] = runner.app("payments").log()
        paid = runner.app("orders").stream(order_id)[-1]
    assert isinstance(taken.event, shop.PaymentTaken) and isinstance(paid.event, shop.OrderPaid)
    command = the_span("execute place")
    reserving = the_span("handle OrderPlaced", **{"fes.follower": "reservations"})
    paying = the_span("handle StockReserved", **{"fes.follower": "payments"})
    settling = the_span("handle PaymentTaken", **{"fes.follower": "orders"})
    chain = [command, reserving, paying, settling]
    assert {s.context.trace_id for s in chain} == {command.context.trace_id}
    for cause, effect in itertools.pairwise(chain):
        assert effect.parent is not None and effect.parent.span_id == cause.context.span_id
    # what each application stored names the span that made it
    for stored, span in ((reserved, reserving), (taken, paying), (paid, settling)):
        carried = context_of(stored.metadata.headers)
        assert (carried.trace_id, carried.span_id) == (span.context.trace_id,
                                                       span.context.span_id)
    # and each handle span links back to the batch it ran in
    batch = the_span("follow reservations", **{"fes.follower": "payments"})
    assert [link.context.span_id for link in paying.links] == [batch.context.span_id]


def test_a_policy_error_is_recorded_on_its_batch_span_and_counted() -> None:
    """A failing policy: the exception on the batch span, an error status, a policy error."""

    def fails(recorded: fes.Recorded[object]) -> list[fes.Intent]:
        raise RuntimeError("no stock service")

    orders = fes.App("orders", aggregates=[shop.order])
    broken = fes.App("reservations", aggregates=[shop.stock], policy=fails)
    system = fes.System([orders, broken], pipes=[["orders", "reservations"]])
    where = {"fes.follower": "reservations", "fes.leader": "orders"}
    before = value("fes.follower.policy_errors", **where)
    with SyncRunner(system, store="memory://") as runner:
        runner.app("orders").execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100)
        runner.run_until_quiet(check=False)
    batch = the_span("follow orders", **where)
    assert (batch.attributes or {})["fes.outcome"] == "stopped"
    assert batch.status.status_code is StatusCode.ERROR
    [event] = batch.events
    assert (event.attributes or {})["exception.message"] == "no stock service"
    assert (event.attributes or {})["fes.position"] == 1
    assert value("fes.follower.policy_errors", **where) - before == 1


def test_a_view_step_that_folds_events_has_a_span() -> None:
    """Each view step that folded notifications is a span; an idle poll is none."""
    with SyncRunner(shop.system, store="memory://") as runner:
        place(runner)
        runner.run_until_quiet()
        runner.run_until_quiet()  # idle polls
        last = runner.app("orders").log()[-1].position
    steps = spans("view statuses")
    assert steps and all((s.attributes or {})["fes.notifications"] > 0 for s in steps)
    assert (steps[-1].attributes or {})["fes.position.to"] == last


def test_metrics_count_commands_events_batches_and_lag() -> None:
    """After a run: commands, events appended, batches, notifications, durations and lag."""
    where = {"fes.follower": "reservations", "fes.leader": "orders"}
    counted = ("fes.events.appended", "fes.follower.batches", "fes.follower.notifications",
               "fes.follower.batch.duration")
    before = {name: value(name, **({} if name == "fes.events.appended" else where))
              for name in counted}
    appended_before = value("fes.events.appended", **{"fes.app": "orders"})
    with SyncRunner(shop.system, store="memory://") as runner:
        runner.app("orders").execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100)
        runner.run_until_quiet()
        assert lag(where) == 0
        runner.app("orders").execute(shop.order, "o-2", shop.place, "bob", "apple", 1, 100)
        # the gauge asks the store when the metrics are read: one order not yet followed
        assert lag(where) == 1
        runner.run_until_quiet()
        assert lag(where) == 0
        stored = len(runner.app("orders").log())
    after = {name: value(name, **({} if name == "fes.events.appended" else where))
             for name in counted}
    assert value("fes.events.appended", **{"fes.app": "orders"}) - appended_before == stored
    assert after["fes.follower.notifications"] - before["fes.follower.notifications"] == stored
    batches = after["fes.follower.batches"] - before["fes.follower.batches"]
    assert batches >= 2
    assert after["fes.follower.batch.duration"] - before["fes.follower.batch.duration"] == batches


_UNTRACED = """
import json, sys
from fes.edge import SyncRunner
from fes.examples import shop
with SyncRunner(shop.system, store="memory://") as runner:
    runner.app("orders").execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100)
    runner.run_until_quiet()
    metadata = [r.metadata for name in ("orders", "reservations")
                for r in runner.app(name).log()]
print(json.dumps({
    "loaded": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
    "headers": [dict(m.headers) for m in metadata],
}))
"""


def _fresh(code: str) -> dict[str, Any]:
    # coverage starts itself in subprocesses: the probe must see only what fes loads
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, check=False)
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_without_opentelemetry_in_the_program_fes_imports_none_of_it() -> None:
    """A program that does not use OpenTelemetry runs a system with none of it loaded."""
    found = _fresh(_UNTRACED)
    assert found["loaded"] == []
    assert found["headers"] and all(h == {} for h in found["headers"])


def test_with_opentelemetry_loaded_but_not_configured_nothing_is_traced() -> None:
    """The API without a tracer provider: no span, no trace context in the metadata."""
    found = _fresh("import opentelemetry.trace\n" + _UNTRACED)
    assert "opentelemetry.trace" in found["loaded"]
    assert found["headers"] and all(h == {} for h in found["headers"])


def test_a_batch_another_instance_recorded_first_is_a_conflict() -> None:
    """Two instances of one follower: the one that loses the race has a conflict span."""
    from fes.edge import Follower
    from fes.edge.stores import open_database

    rival: list[Follower] = []

    def reserve_after_the_rival(recorded: fes.Recorded[object]) -> list[fes.Intent]:
        if rival:
            rival.pop().step("orders")  # the rival records this batch first
        return shop.on_order_event(recorded)

    follower_app = fes.App("reservations", aggregates=[shop.stock],
                           policy=reserve_after_the_rival)
    where = {"fes.follower": "reservations", "fes.leader": "orders"}
    before = value("fes.follower.conflicts", **where)
    with open_database("memory://") as database:
        orders = Application(shop.orders, store=database)
        orders.execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100)
        leaders = {"orders": Application(shop.orders, store=database)}
        first = Follower(Application(follower_app, store=database), leaders)
        second = Follower(Application(follower_app, store=database), leaders)
        rival.append(second)
        assert first.step("orders") == 0  # read again after the conflict: nothing left
        assert second.processed == 1 and first.conflicts == 1
    outcomes = [(s.attributes or {})["fes.outcome"] for s in spans("follow orders")]
    assert sorted(outcomes) == ["conflict", "processed"]
    (lost,) = [s for s in spans("follow orders")
               if (s.attributes or {})["fes.outcome"] == "conflict"]
    assert [e.name for e in lost.events] == ["conflict"]
    assert value("fes.follower.conflicts", **where) - before == 1


def test_a_view_whose_fold_fails_records_the_error_on_its_span() -> None:
    """A view step whose apply raises (stopping the view) leaves a span with the exception
    and an error status."""

    def fails(count: int, recorded: fes.Recorded[object]) -> int:
        raise ValueError("cannot count that")

    counting = fes.App("orders", aggregates=[shop.order],
                       views=[fes.View("count", initial=0, apply=fails)])
    from fes.edge import Projection

    with Application(counting, store="memory://") as orders:
        orders.execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100)
        projection = Projection(orders, counting.views[0])
        assert projection.step() == 0
        assert projection.error is not None
        assert isinstance(projection.error.error, ValueError)
    step = the_span("view count")
    assert step.status.status_code is StatusCode.ERROR
    assert [e.name for e in step.events] == ["exception"]
    assert (step.attributes or {})["fes.notifications"] == 0


def test_a_command_that_fails_is_an_error_on_its_span() -> None:
    """A command raising something else than a refusal: outcome error, status ERROR."""

    def breaks(order: shop.Order | None) -> list[shop.OrderPlaced]:
        raise KeyError("no such customer")

    with Application(shop.orders, store="memory://") as orders:
        before = value("fes.commands", **{"fes.app": "orders", "fes.outcome": "error"})
        with pytest.raises(KeyError):
            orders.execute(shop.order, "o-1", breaks)
    span = the_span("execute breaks")
    assert (span.attributes or {})["fes.outcome"] == "error"
    assert span.status.status_code is StatusCode.ERROR
    assert value("fes.commands", **{"fes.app": "orders", "fes.outcome": "error"}) - before == 1


def test_an_intent_the_follower_cannot_perform_fails_its_handle_span() -> None:
    """An intent on an aggregate the follower does not keep: the handle span has the error."""

    def emits_elsewhere(recorded: fes.Recorded[object]) -> list[fes.Intent]:
        return [fes.Emit(shop.payment, "p-1", [shop.PaymentTaken("o-1", 100)])]

    orders = fes.App("orders", aggregates=[shop.order])
    wrong = fes.App("reservations", aggregates=[shop.stock], policy=emits_elsewhere)
    system = fes.System([orders, wrong], pipes=[["orders", "reservations"]])
    with SyncRunner(system, store="memory://") as runner:
        runner.app("orders").execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100)
        runner.run_until_quiet(check=False)
    handle = the_span("handle OrderPlaced")
    assert handle.status.status_code is StatusCode.ERROR
    assert "does not keep" in (handle.events[0].attributes or {})["exception.message"]
    batch = the_span("follow orders")
    assert (batch.attributes or {})["fes.outcome"] == "stopped"


def _refuse(order: shop.Order | None, reason: str) -> list[shop.OrderPlaced]:
    raise fes.Rejected(reason)


def _refusing_system(on_error: Any = fes.policies.stop_on_error) -> fes.System:
    """Orders, and a follower whose Do on each placed order is refused."""

    def refuses(recorded: fes.Recorded[object]) -> list[fes.Intent]:
        return [fes.Do(shop.order, f"copy-{recorded.stream}", _refuse, ("out of stock",))]

    orders = fes.App("orders", aggregates=[shop.order])
    refusing = fes.App("copies", aggregates=[shop.order], policy=refuses, on_error=on_error)
    return fes.System([orders, refusing], pipes=[["orders", "copies"]])


def _order_trace_errors(stream: str) -> list[ReadableSpan]:
    """The spans of the trace of the command on ``stream`` whose status is ERROR."""
    placed = the_span("execute place", **{"fes.stream": stream})
    return [
        s for s in spans() if s.context.trace_id == placed.context.trace_id
        and s.status.status_code is StatusCode.ERROR
    ]


def test_a_refused_do_that_stops_the_follower_is_an_error_of_the_upstream_trace() -> None:
    """The handle span of the event whose Do was refused has the error, in the order's trace.

    It used to record the Rejected but leave its status unset, as for a
    command's refusal: only the batch span, in a trace of its own, had the
    error, and the order's trace showed none.
    """
    with SyncRunner(_refusing_system(), store="memory://") as runner:
        runner.app("orders").execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100)
        runner.run_until_quiet(check=False)
        assert "copies" in runner.errors
    placed = the_span("execute place", **{"fes.stream": "o-1"})
    handle = the_span("handle OrderPlaced")
    assert handle.parent is not None and handle.parent.span_id == placed.context.span_id
    assert handle.status.status_code is StatusCode.ERROR
    # with the intent that failed, as the PolicyError says it
    assert handle.status.description == (
        "Rejected: out of stock (while performing Do _refuse on 'order' stream 'copy-o-1')"
    )
    [event] = handle.events
    assert (event.attributes or {})["exception.type"].endswith("Rejected")
    assert _order_trace_errors("o-1") == [handle]
    assert the_span("follow orders").status.status_code is StatusCode.ERROR


def test_a_policy_that_raises_fails_a_handle_span_in_the_upstream_trace() -> None:
    """A policy that raises on an event: a handle span in the event's trace has the error."""

    def fails(recorded: fes.Recorded[object]) -> list[fes.Intent]:
        raise RuntimeError("no stock service")

    orders = fes.App("orders", aggregates=[shop.order])
    broken = fes.App("reservations", aggregates=[shop.stock], policy=fails)
    system = fes.System([orders, broken], pipes=[["orders", "reservations"]])
    with SyncRunner(system, store="memory://") as runner:
        runner.app("orders").execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100)
        runner.run_until_quiet(check=False)
    placed = the_span("execute place", **{"fes.stream": "o-1"})
    handle = the_span("handle OrderPlaced")
    assert handle.parent is not None and handle.parent.span_id == placed.context.span_id
    assert handle.status.status_code is StatusCode.ERROR
    [event] = handle.events
    assert (event.attributes or {})["exception.message"] == "no stock service"
    assert _order_trace_errors("o-1") == [handle]


def test_each_failed_attempt_of_a_retried_or_skipped_event_is_an_error_span() -> None:
    """Retried, then skipped: each attempt's handle span has the error; the batches do not."""

    def retry_then_skip(error: Exception, recorded: fes.Recorded[object], attempt: int) -> Any:
        return fes.Retry(0) if attempt < 2 else fes.Skip()

    with SyncRunner(_refusing_system(retry_then_skip), store="memory://") as runner:
        runner.app("orders").execute(shop.order, "o-1", shop.place, "ann", "apple", 1, 100)
        runner.run_until_quiet(check=False)
        assert runner.errors == {}
        assert len(fes.edge.skipped(runner.app("copies"))) == 1
    handles = spans("handle OrderPlaced")
    assert len(handles) == 2
    assert [h.status.status_code for h in handles] == [StatusCode.ERROR] * 2
    assert sorted(_order_trace_errors("o-1"), key=lambda s: s.start_time or 0) == sorted(
        handles, key=lambda s: s.start_time or 0
    )
    assert {b.status.status_code for b in spans("follow orders")} == {StatusCode.UNSET}


def test_without_a_tracer_fes_counts_but_makes_no_span(monkeypatch: pytest.MonkeyPatch) -> None:
    """Metrics without traces: commands and batches counted, no span, no trace context."""
    telemetry = _telemetry.active()
    assert telemetry is not None
    monkeypatch.setattr(telemetry, "find_tracer", lambda: None)
    where = {"fes.follower": "reservations", "fes.leader": "orders"}
    before = value("fes.follower.batches", **where)
    with SyncRunner(shop.system, store="memory://") as runner:
        place(runner)
        runner.run_until_quiet()
        stored = [r.metadata for name in ("orders", "reservations", "payments")
                  for r in runner.app(name).log()]
        runner.view("orders", "statuses").step()
    assert spans() == []
    assert stored and all("traceparent" not in m.headers for m in stored)
    assert value("fes.follower.batches", **where) - before >= 1
