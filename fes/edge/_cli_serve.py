"""``fes serve``: serve one application's notification log over HTTP, read-only.

::

    fes serve --app NAME [--store URL] [--host 127.0.0.1] [--port 8000]
              [--ssl-certfile F --ssl-keyfile F] [--insecure-no-token]

The token comes from ``FES_SERVE_TOKEN`` (or ``<APP>_FES_SERVE_TOKEN``);
without one the command refuses to start unless ``--insecure-no-token`` is
given.  TLS is uvicorn's: ``--ssl-certfile`` and ``--ssl-keyfile``.  SIGINT
and SIGTERM stop it after answering the requests in hand.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from fes.errors import ConfigurationError

from . import _cli_args as parse
from . import _settings as settings

# `fes --help` loads no store: each function imports what it uses
if TYPE_CHECKING:
    from .stores._base import Database

__all__ = ["add_serve"]

EXIT_ERROR = 1


def add_serve(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``fes serve`` with the parser's ``command`` helper (which adds --store)."""
    serve = command(
        "serve",
        "serve one application's notification log over HTTP, read-only, for followers "
        "in other services (bearer token from $FES_SERVE_TOKEN)",
        store="the leader's store URL (default: $<APP>_FES_STORE_URL, $FES_STORE_URL, "
        "then sqlite:///fes.db)",
    )
    serve.add_argument("--app", required=True, help="the application whose log to serve")
    serve.add_argument("--host", default="127.0.0.1",
                       help="the address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    serve.add_argument("--port", type=parse.port, default=8000,
                       help="the port (default 8000; 0: any)")
    serve.add_argument("--ssl-certfile", metavar="FILE", help="serve HTTPS with this certificate")
    serve.add_argument("--ssl-keyfile", metavar="FILE", help="the certificate's private key")
    serve.add_argument("--max-wait", type=parse.seconds_or_zero, default=30.0, metavar="SECONDS",
                       help="the longest a long poll waits (default 30; 0: none)")
    serve.add_argument("--max-limit", type=parse.size, default=1000, metavar="N",
                       help="the most notifications in one page (default 1000)")
    serve.add_argument("--insecure-no-token", action="store_true",
                       help="serve without a bearer token (anyone who can connect reads the log)")
    serve.set_defaults(handler=cmd_serve)


def _open(url: str) -> Database:
    """Open the leader's store to read it: create no file, refuse a missing one."""
    from ._cli_stores import PRIVATE
    from .stores import open_database, redact

    if url.lower().startswith("memory:"):
        raise ConfigurationError(f"there is no store at {redact(url)}: {PRIVATE}")
    if url.lower().startswith("sqlite:"):
        from .stores._sqlite._options import file_path
        from .stores._urls import parse_url

        path = file_path(parse_url(url))
        if not os.path.exists(path):
            raise ConfigurationError(
                f"there is no store at {redact(url)}: there is no file {path}; "
                "check --store or $FES_STORE_URL"
            )
        return open_database(url, create=False)
    return open_database(url)


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    """Run ``fes serve`` until SIGINT or SIGTERM."""
    from ._http_serve import serve

    env = os.environ
    # --store URL, or --store APP=URL as every command takes it ("" refused)
    given = settings.parse_store_option(args.store or ())
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        raise ConfigurationError("HTTPS needs both --ssl-certfile and --ssl-keyfile")
    token = settings.setting(env, "FES_SERVE_TOKEN", args.app)
    if token is None and not args.insecure_no_token:
        raise ConfigurationError(
            f"no bearer token: set {settings.prefixed(args.app, 'FES_SERVE_TOKEN')} or "
            "FES_SERVE_TOKEN (followers send it as FES_HTTP_TOKEN), or pass "
            "--insecure-no-token to serve the log to anyone who can connect"
        )
    if token is not None and args.insecure_no_token:
        raise ConfigurationError(
            "--insecure-no-token is given, but FES_SERVE_TOKEN holds a token: keep one of them"
        )
    from .stores import redact

    placed = settings.placement(env, given, [args.app], strict=False)
    if args.app not in placed:
        if isinstance(given, dict):
            # --store APP=URL for other applications only: say it in the command's terms
            named = ", ".join(sorted(repr(name) for name in given))
            raise ConfigurationError(
                f"--store names {named} but not {args.app!r}, the application to serve: "
                f"add --store {args.app}=URL (or a plain --store URL), or set "
                f"{settings.prefixed(args.app, 'FES_STORE_URL')} or FES_STORE_URL"
            )
        raise ConfigurationError(settings.unplaced(env, given, [args.app])[args.app])
    url = placed[args.app]
    scheme = "https" if args.ssl_certfile else "http"
    with _open(url) as database:
        known = database.apps()
        if args.app not in known:
            raise ConfigurationError(
                f"the store {database.url} has no application {args.app!r}; it has "
                f"{', '.join(known) or 'none'} (start the application first, or check --app)"
            )
        store = database.store(args.app)
        stop = threading.Event()

        def ready(port: int) -> None:
            print(
                f"fes: serving the log of {args.app!r} from {redact(url)} at "
                f"{scheme}://{_host(args.host)}:{port}"
                f"{'' if token else ' WITHOUT a token'}; stop with Ctrl-C or SIGTERM",
                file=sys.stderr, flush=True,
            )

        def on_signal(number: int, frame: FrameType | None) -> None:
            stop.set()

        saved = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            started = serve(
                store, token=token, host=args.host, port=args.port,
                ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
                max_limit=args.max_limit, max_wait=args.max_wait, until=stop, ready=ready,
            )
        finally:
            for number, previous in saved.items():
                signal.signal(number, previous)
    if not started:
        print(f"fes: error: could not serve at {args.host}:{args.port}", file=sys.stderr)
        return EXIT_ERROR
    print("fes: stopped", file=sys.stderr)
    return 0


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
