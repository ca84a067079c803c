"""The long-running entry point: :func:`run` a system until SIGINT or SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from types import FrameType
from typing import Any

from fes.errors import PolicyError
from fes.system import System

from ._follower import DEFAULT_BATCH_SIZE
from ._loading import load_system
from ._placement import placement_urls
from ._processes import ProcessRunner
from ._runners import DEFAULT_POLL_INTERVAL, ThreadedRunner

__all__ = ["run"]

logger = logging.getLogger("fes.runners")


@contextlib.contextmanager
def _stop_signals(handler: Callable[[], None]) -> Iterator[None]:
    """Call ``handler`` on SIGINT and SIGTERM while the context is open (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(number: int, frame: FrameType | None) -> None:
        logger.info("received %s; stopping after the batches in hand", signal.Signals(number).name)
        handler()

    saved = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, previous in saved.items():
            signal.signal(number, previous)


def run(
    system: System | str,
    store: str | Mapping[str, str] | None = None,
    *,
    processes: int | None = None,
    apps: Collection[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    until: threading.Event | None = None,
    on_start: Callable[[], object] | None = None,
    **options: Any,
) -> dict[str, PolicyError]:
    """Run ``system`` on the store at ``store`` until SIGINT or SIGTERM (or ``until`` is set).

    ``system`` is a :class:`fes.System` or ``"module:attribute"`` naming one.
    ``store`` is a URL or a mapping from application names (and ``"*"``)
    to URLs; it defaults to each application's ``<APP>_FES_STORE_URL``,
    then ``FES_STORE_URL``, then ``sqlite:///fes.db``.  With
    ``processes`` (N >= 1) the applications run in N OS processes (see
    :class:`fes.edge.ProcessRunner`); otherwise in threads of this
    process.  ``apps`` runs only those applications' followers and views, so
    one system can be spread over several hosts, sharing a database or
    each application on its own.
    ``on_start`` is called once the runner is built (the stores it drives
    opened and checked), just before it starts: where to say that it runs.
    On a signal, every worker finishes the batch in hand, then this returns
    the followers that had stopped on a policy error.
    """
    # a ProcessRunner's workers load the system by its name, so keep the name
    resolved = load_system(system) if isinstance(system, str) else system
    urls = placement_urls(store, (app.name for app in resolved.apps))
    # one URL when the applications share one; else each application's own
    url: str | dict[str, str] = (
        next(iter(urls.values()))
        if len(set(urls.values())) == 1 and len(urls) == len(resolved.apps)
        else urls
    )
    stop = until or threading.Event()
    settings: dict[str, Any] = dict(
        apps=apps, batch_size=batch_size, poll_interval=poll_interval, **options
    )
    runner: ThreadedRunner | ProcessRunner
    # the handlers first: a signal while the stores open stops the run once it
    # has started, rather than killing the process half-way through opening them
    with _stop_signals(stop.set):
        if processes:
            runner = ProcessRunner(system, url, processes=processes, **settings)
        else:
            runner = ThreadedRunner(resolved, url, **settings)
        try:
            if on_start is not None:
                on_start()
            runner.start()
            while not stop.wait(0.5):
                pass
        finally:
            runner.stop()
            runner.close()
    return dict(runner.errors)
