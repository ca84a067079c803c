"""Run every Python code block of the documentation as a test, with Sybil.

The code blocks of one page share a namespace and run in order, so a page
reads like one interpreter session.  A block that starts with ``>>>`` is a
doctest: its printed output and exceptions are checked as well, so the error
messages the pages show are the ones fes really gives.
"""

import sys
from doctest import ELLIPSIS, NORMALIZE_WHITESPACE

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser


def forget_opentelemetry(namespace: dict[str, object]) -> None:
    """Unset OpenTelemetry's global providers, which a page (operations.md) sets.

    The API lets a process set each provider once: without this, the tests
    after that page would run traced, and a later page or test could not set
    its own.  These are the API's private globals.
    """
    if "opentelemetry.trace" not in sys.modules:
        return
    from opentelemetry import trace
    from opentelemetry.metrics import _internal as metrics_globals
    from opentelemetry.util._once import Once

    from fes.edge import _telemetry

    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._PROXY_TRACER_PROVIDER = trace.ProxyTracerProvider()  # type: ignore[attr-defined]
    metrics_globals._METER_PROVIDER = None
    metrics_globals._METER_PROVIDER_SET_ONCE = Once()
    # the proxy hands the next provider every meter made through it before
    metrics_globals._PROXY_METER_PROVIDER = metrics_globals._ProxyMeterProvider()
    _telemetry.reset()


pytest_collect_file = Sybil(
    parsers=[
        PythonCodeBlockParser(doctest_optionflags=ELLIPSIS | NORMALIZE_WHITESPACE),
        SkipParser(),
    ],
    patterns=["*.md"],
    setup=forget_opentelemetry,
    teardown=forget_opentelemetry,
).pytest()
