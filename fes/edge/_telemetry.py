"""Traces and metrics through OpenTelemetry, when the program uses it.

fes never imports OpenTelemetry by itself.  :func:`active` looks whether the
program has loaded the OpenTelemetry API (configuring a tracer or meter
provider, or running under ``opentelemetry-instrument``, loads it): if not,
it answers None and fes does nothing more, so a program without the
``otel`` extra pays one dictionary lookup per command or batch.  When the API
is loaded, fes reports through the global providers:

- spans: ``execute <command>`` for each :meth:`Application.execute`,
  ``follow <leader>`` for each follower batch, ``handle <topic>`` for each
  upstream event a follower acts on (or whose policy raised: a failure to
  handle an event is an error of that event's trace), ``view <name>`` for each step of a
  :class:`~fes.edge.Projection`; made only once a real tracer provider is set;
- trace context in metadata: a command's events carry its span's W3C trace
  context (``traceparent``, ``tracestate``) in their metadata headers; a
  follower's ``handle`` span continues the trace of the event it handles
  (its parent is the upstream span) and its effects carry the ``handle``
  span's context, so one trace follows an order through every application;
  the ``follow`` span links to the trace of each event of its batch;
- metrics (see :data:`INSTRUMENTS`), through the global meter provider.

Attribute names are fes's own, in the ``fes.`` namespace, in the style of
the OpenTelemetry semantic conventions (``fes.app``, ``fes.stream``, …).
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from fes.errors import ConcurrencyError, Rejected
from fes.events import Metadata, Recorded

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import Span, Tracer

__all__ = ["INSTRUMENTS", "Telemetry", "active", "reset"]


class _Follower(Protocol):
    """What telemetry reads of a :class:`fes.edge.Follower` (this module imports none)."""

    @property
    def name(self) -> str: ...
    @property
    def unit(self) -> str: ...

    @property
    def error(self) -> BaseException | None: ...

    failures: list[Any]
    positions: dict[str, int]

    def lag(self) -> dict[str, int]: ...


class _Projection(Protocol):
    """What telemetry reads of a :class:`fes.edge.Projection`."""

    seen: int

    @property
    def error(self) -> Any: ...

#: The modules whose presence says that the program uses OpenTelemetry.
_API = ("opentelemetry.trace", "opentelemetry.metrics")

#: The name fes's tracer and meter are known by.
SCOPE = "fes"

#: Each metric fes reports: name, kind, unit and what it counts.
INSTRUMENTS = {
    "fes.commands": ("counter", "{command}",
                     "commands executed, by fes.app and fes.outcome"),
    "fes.events.appended": ("counter", "{event}", "events appended, by fes.app"),
    "fes.follower.batches": ("counter", "{batch}",
                             "follower batches, by fes.follower, fes.leader and fes.outcome"),
    "fes.follower.notifications": ("counter", "{notification}",
                                   "upstream notifications a follower consumed"),
    "fes.follower.conflicts": ("counter", "{conflict}",
                               "batches read again after another writer moved first"),
    "fes.follower.policy_errors": ("counter", "{error}",
                                   "policy failures (retried, skipped or stopping)"),
    "fes.follower.batch.duration": ("histogram", "s", "how long a follower batch took"),
    "fes.follower.lag": ("gauge", "{notification}",
                         "how far a leader's log reaches past what its follower tracked"),
}


class Telemetry:
    """The tracer and instruments fes reports through, once OpenTelemetry is loaded."""

    def __init__(self) -> None:
        from opentelemetry import metrics

        self.tracer: Tracer | None = None
        meter = metrics.get_meter(SCOPE)
        self.commands = meter.create_counter("fes.commands", "{command}",
                                             INSTRUMENTS["fes.commands"][2])
        self.appended = meter.create_counter("fes.events.appended", "{event}",
                                             INSTRUMENTS["fes.events.appended"][2])
        self.batches = meter.create_counter("fes.follower.batches", "{batch}",
                                            INSTRUMENTS["fes.follower.batches"][2])
        self.notifications = meter.create_counter(
            "fes.follower.notifications", "{notification}",
            INSTRUMENTS["fes.follower.notifications"][2],
        )
        self.conflicts = meter.create_counter("fes.follower.conflicts", "{conflict}",
                                              INSTRUMENTS["fes.follower.conflicts"][2])
        self.policy_errors = meter.create_counter(
            "fes.follower.policy_errors", "{error}", INSTRUMENTS["fes.follower.policy_errors"][2]
        )
        self.duration = meter.create_histogram("fes.follower.batch.duration", "s",
                                               INSTRUMENTS["fes.follower.batch.duration"][2])
        # for the lag gauge, per follower unit the last follower that ran a batch
        # (one gauge per unit: a stale instance left for the collector must not
        # report over the one at work)
        self.followers: dict[str, weakref.ref[_Follower]] = {}
        meter.create_observable_gauge(
            "fes.follower.lag", [self._lags], "{notification}",
            INSTRUMENTS["fes.follower.lag"][2],
        )

    def find_tracer(self) -> Tracer | None:
        """The tracer, once a real tracer provider is set (the API's own only proxies)."""
        if self.tracer is None:
            from opentelemetry import trace

            provider = trace.get_tracer_provider()
            if not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
                self.tracer = provider.get_tracer(SCOPE)
        return self.tracer

    # --- commands ---------------------------------------------------------------------

    def execute(
        self,
        app: str,
        aggregate: str,
        stream: str,
        command: Callable[..., Any],
        metadata: Metadata,
        run: Callable[[Metadata], list[Recorded[Any]]],
    ) -> list[Recorded[Any]]:
        """Run ``run`` (the command) in a span; its events carry the span's trace context."""
        tracer = self.find_tracer()
        if tracer is None:
            return self._count_command(app, run, metadata)
        name = getattr(command, "__name__", type(command).__name__)
        attributes = {"fes.app": app, "fes.aggregate": aggregate, "fes.stream": stream,
                      "fes.command": name}
        with tracer.start_as_current_span(
            f"execute {name}", attributes=attributes, record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                recorded = self._count_command(app, run, with_context(metadata), span)
            except BaseException as error:
                _failed(span, error)
                raise
            span.set_attribute("fes.events", len(recorded))
            if recorded:
                span.set_attribute("fes.version.expected", recorded[0].version - 1)
                span.set_attribute("fes.version", recorded[-1].version)
                span.set_attribute("fes.position", recorded[-1].position)
            return recorded

    def _count_command(
        self,
        app: str,
        run: Callable[[Metadata], list[Recorded[Any]]],
        metadata: Metadata,
        span: Span | None = None,
    ) -> list[Recorded[Any]]:
        outcome = "accepted"
        try:
            return run(metadata)
        except Rejected:
            outcome = "rejected"
            raise
        except ConcurrencyError:
            outcome = "conflict"
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            self.commands.add(1, {"fes.app": app, "fes.outcome": outcome})
            if span is not None:
                span.set_attribute("fes.outcome", outcome)

    def appended_events(self, app: str, count: int) -> None:
        """Count events an application appended (by a command, a batch or a follower)."""
        self.appended.add(count, {"fes.app": app})

    # --- followers --------------------------------------------------------------------

    def batch(
        self,
        follower: _Follower,
        leader: str,
        previous: int,
        read: int,
        conflicts: tuple[type[BaseException], ...],
        run: Callable[[], int],
    ) -> int:
        """Run one follower batch (``run``) of ``read`` notifications in a span; count it.

        ``conflicts`` are the errors that mean another writer moved first (the
        follower reads again): counted as conflicts, not errors.
        """
        known = self.followers.get(follower.unit)
        if known is None or known() is not follower:
            self.followers[follower.unit] = weakref.ref(follower)
        where = {"fes.app": follower.name, "fes.follower": follower.unit, "fes.leader": leader}
        tracer = self.find_tracer()
        started = time.monotonic()
        outcome = "processed"
        failures = len(follower.failures)
        span = None if tracer is None else tracer.start_span(
            f"follow {leader}",
            attributes={**where, "fes.position.from": previous, "fes.notifications.read": read},
        )
        try:
            if span is None:
                consumed = run()
            else:
                from opentelemetry import trace

                with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                    consumed = run()
        except conflicts as conflict:
            outcome = "conflict"
            self.conflicts.add(1, where)
            if span is not None:
                span.add_event("conflict", {"fes.error": f"{type(conflict).__name__}: {conflict}"})
            raise
        except BaseException as error:
            outcome = "error"
            if span is not None:
                _failed(span, error)
            raise
        else:
            if follower.error is not None:
                outcome = "stopped"
            self.notifications.add(consumed, where)
            if span is not None:
                span.set_attribute("fes.notifications", consumed)
                span.set_attribute("fes.position.to", follower.positions.get(leader, previous))
                if follower.error is not None:
                    from opentelemetry.trace import Status, StatusCode

                    span.set_status(Status(StatusCode.ERROR, str(follower.error)))
            return consumed
        finally:
            errors = len(follower.failures) - failures
            if errors:
                self.policy_errors.add(errors, where)
            self.batches.add(1, {**where, "fes.outcome": outcome})
            self.duration.record(time.monotonic() - started, where)
            if span is not None:
                span.set_attribute("fes.outcome", outcome)
                span.end()

    def handle(
        self,
        follower: _Follower,
        leader: str,
        recorded: Recorded[Any],
        intents: int,
        perform: Callable[[Mapping[str, str]], None],
    ) -> None:
        """Perform one upstream event's intents in a span continuing that event's trace.

        The batch's span links to the upstream trace; the effects carry this
        span's trace context in their headers.  An event the policy had no
        intent for is linked, but makes no span of its own.  If ``perform``
        raises (the policy raised, or a command refused or raised, or a
        projector raised), the span records the exception and its status is
        ERROR, a :class:`Rejected` included: the handling of this event failed,
        whether the follower then retries it (a new span at each attempt),
        skips it or stops.
        """
        tracer = self.find_tracer()
        if tracer is None:
            perform(recorded.metadata.headers)
            return
        from opentelemetry import propagate, trace
        from opentelemetry.trace import Link

        headers = recorded.metadata.headers
        upstream = propagate.extract(headers)
        upstream_span = trace.get_current_span(upstream).get_span_context()
        batch_span = trace.get_current_span()
        where: dict[str, str | int] = {
            "fes.leader": leader, "fes.position": recorded.position,
            "fes.stream": recorded.stream, "fes.version": recorded.version,
        }
        if upstream_span.is_valid:
            batch_span.add_link(upstream_span, where)
        if not intents:
            perform(headers)
            return
        links = [Link(batch_span.get_span_context())] if batch_span.is_recording() else []
        topic = recorded.topic or type(recorded.event).__name__
        with tracer.start_as_current_span(
            f"handle {topic.rsplit('.', 1)[-1]}", context=upstream, links=links,
            attributes={"fes.app": follower.name, "fes.follower": follower.unit,
                        "fes.topic": topic, **where},
            record_exception=False, set_status_on_exception=False,
        ) as span:
            try:
                perform(_injected(headers))
            except BaseException as error:
                # the policy failed on this event, a refusal of its Do included:
                # an error of the upstream trace, whatever on_error then decides
                _failed(span, error, refusal=True)
                raise

    def written(self, count: int) -> None:
        """Note on the current (batch) span how many events its commit writes."""
        from opentelemetry import trace

        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("fes.events", count)

    def policy_error(self, follower: _Follower, leader: str, error: BaseException,
                     position: int) -> None:
        """Record a policy failure on the current (batch) span."""
        from opentelemetry import trace

        span = trace.get_current_span()
        if span.is_recording():
            span.record_exception(error, {"fes.position": position, "fes.leader": leader,
                                          "fes.follower": follower.unit})

    def _lags(self, options: CallbackOptions) -> Iterator[Observation]:
        from opentelemetry.metrics import Observation

        for unit, ref in list(self.followers.items()):
            follower = ref()
            if follower is None:
                self.followers.pop(unit, None)
                continue
            try:
                lags = follower.lag()
            except Exception:  # a store that cannot answer now: no figure, not a wrong one
                continue
            for leader, lag in lags.items():
                yield Observation(lag, {"fes.app": follower.name, "fes.follower": follower.unit,
                                        "fes.leader": leader})

    # --- views ------------------------------------------------------------------------

    def view_step(
        self, app: str, view: str, projection: _Projection, run: Callable[[], int]
    ) -> int:
        """Run one step of ``app``'s projection of ``view``; a span if it folded or failed.

        A caught-up view is polled often: a step that found nothing leaves no span.
        """
        tracer = self.find_tracer()
        if tracer is None:
            return run()
        began, start = projection.seen, time.time_ns()
        failure: BaseException | None = None
        consumed = 0
        running = projection.error is None
        try:
            consumed = run()
        except BaseException as error:
            failure = error
            raise
        finally:
            if failure is None and running and projection.error is not None:
                failure = projection.error.error  # its apply raised: the view stopped
            if consumed or failure is not None:
                span = tracer.start_span(
                    f"view {view}", start_time=start,
                    attributes={"fes.app": app, "fes.view": view, "fes.position.from": began,
                                "fes.notifications": consumed, "fes.position.to": projection.seen},
                )
                if failure is not None:
                    _failed(span, failure)
                span.end()
        return consumed


def _failed(span: Span, error: BaseException, refusal: bool = False) -> None:
    """Record ``error`` on ``span``, with an error status unless it is a refusal.

    A command's refusal is an answer, not a failure; unless ``refusal`` says
    that here it is one (a refused ``Do`` is a policy error).
    """
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(error)
    if refusal or not isinstance(error, Rejected):
        # with its notes, as PolicyError says it: which intent failed, for one
        notes = "".join(f" ({note})" for note in getattr(error, "__notes__", ()))
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}{notes}"))


def _injected(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with the current span's trace context in place of any they held."""
    from opentelemetry import propagate

    carrier = dict(headers)
    for key in propagate.get_global_textmap().fields:
        carrier.pop(key, None)
    propagate.inject(carrier)
    return carrier


def with_context(metadata: Metadata) -> Metadata:
    """``metadata`` whose headers carry the current span's W3C trace context."""
    return Metadata(metadata.correlation_id, metadata.causation_id, _injected(metadata.headers))


_telemetry: Telemetry | None = None
_starting = threading.Lock()


def active() -> Telemetry | None:
    """fes's telemetry if the program has loaded OpenTelemetry's API, else None (cheaply)."""
    if _telemetry is not None:
        return _telemetry
    modules = sys.modules
    if _API[0] not in modules and _API[1] not in modules:
        return None
    return _start()


def _start() -> Telemetry:
    global _telemetry
    with _starting:  # one set of instruments, whichever thread comes first
        if _telemetry is None:
            _telemetry = Telemetry()
        return _telemetry


def reset() -> None:
    """Forget the tracer and instruments (for tests that replace the global providers)."""
    global _telemetry
    _telemetry = None
