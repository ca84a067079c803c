"""``fes serve``: one application's notification log, read-only, over HTTP.

:class:`LogServer` is a plain ASGI application (no framework) that uvicorn
serves.  It answers two ``GET`` requests, relative to the served address:

``/info``
    ``{"protocol": 1, "app": NAME, "last_position": N, "max_limit": L,
    "max_wait": W, "oldest": SEAL, "newest": SEAL}``, where each SEAL says
    how the oldest and the newest stored payload are framed
    (``{"position", "encrypted", "compressed", "key_id"}``, or null for an
    empty log): key ids are stored in the clear, keys never leave anywhere.
``/log?after=N[&limit=L][&topics=T]...[&to=M][&wait=S]``
    a page of notifications (see :mod:`fes.edge.stores._http._wire`) with
    ``after < position <= to`` (``N`` and ``M`` 0 or more), at most
    ``min(L, max_limit)`` of them, of the given topics only when ``topics``
    is repeated; ``"limit"`` in the answer
    is the bound applied.  With ``wait`` (seconds, at most ``max_wait``), a
    log with no position above ``after`` is waited on, and the page is read
    as soon as one appears or the time passes.

Every request must carry ``Authorization: Bearer TOKEN``; the token is
compared in constant time, and a request without it, or with another, gets
401 and a warning on the ``fes.serve`` logger naming the client's address
(never the token).  A store that cannot reach its database (a PostgreSQL
server down) is answered at once with 503 and ``{"error": ..., "store":
"unavailable"}``, logged once until the store answers again.  Store calls
block, so each runs in a worker thread: the event loop only parses and
answers.  Waits run in threads of their own, in
slices, so that a stopping server answers its long polls at once.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson

from fes.errors import ConfigurationError, FesError, StoreError, StoreUnavailable

from .stores._base import Store
from .stores._checks import check_integer, check_log
from .stores._http._wire import INFO_PATH, LOG_PATH, PROTOCOL, encode_page, sealing

__all__ = ["DEFAULT_MAX_LIMIT", "DEFAULT_MAX_WAIT", "LogServer", "serve"]

logger = logging.getLogger("fes.serve")

#: The most rows one page holds, whatever the client asks.
DEFAULT_MAX_LIMIT = 1000
#: The longest a long poll waits, in seconds, whatever the client asks.
DEFAULT_MAX_WAIT = 30.0
#: How long one wait in a worker thread lasts at most: a stopping server
#: answers its long polls within this.
_SLICE = 0.25

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
T = TypeVar("T")


class _BadRequest(Exception):
    """A query the server cannot answer: 400 with this message."""


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "an unknown client"


class LogServer:
    """An ASGI application serving ``store``'s notification log, read-only.

    ``token`` is the bearer token every request must carry (None serves
    anyone: only for a loopback address or behind a proxy that checks).
    ``max_limit`` bounds a page's rows; ``max_wait`` a long poll's seconds;
    ``readers`` and ``waiters`` are the worker threads that read and wait.
    """

    def __init__(
        self,
        store: Store,
        *,
        token: str | None,
        max_limit: int = DEFAULT_MAX_LIMIT,
        max_wait: float = DEFAULT_MAX_WAIT,
        readers: int = 4,
        waiters: int = 64,
    ) -> None:
        if token is not None and (
            not isinstance(token, str) or not re.fullmatch(r"[\x21-\x7e]+", token)
        ):
            # never echoed: the message would put a secret in a log
            raise ConfigurationError(
                "the bearer token must be printable ASCII without spaces (an HTTP header "
                "carries it), or None"
            )
        if not isinstance(max_limit, int) or isinstance(max_limit, bool) or max_limit < 1:
            raise ConfigurationError(
                f"max_limit must be an integer of 1 or more, not {max_limit!r}"
            )
        if not isinstance(max_wait, int | float) or not 0 <= max_wait < math.inf:
            raise ConfigurationError(f"max_wait must be a number of seconds, not {max_wait!r}")
        self.store = store
        self.max_limit = max_limit
        self.max_wait = float(max_wait)
        self._token = None if token is None else token.encode("utf-8")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="fes-serve-read")
        self._waiters = ThreadPoolExecutor(waiters, thread_name_prefix="fes-serve-wait")
        self._free_waiters = waiters  # touched by the event loop's thread only
        self._stopping = threading.Event()
        self._unavailable = False  # touched by the event loop's thread only

    def stop(self) -> None:
        """Answer every long poll now and take no new wait (the server is stopping)."""
        self._stopping.set()

    def close(self) -> None:
        """Stop, and let the worker threads go once their calls return."""
        self.stop()
        self._readers.shutdown(wait=False, cancel_futures=True)
        self._waiters.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":  # websockets and the like: not served
            return
        if not self._authorised(scope):
            await self._answer(send, 401, {"error": "a valid bearer token is required"},
                               [(b"www-authenticate", b'Bearer realm="fes"')])
            return
        if scope["method"] != "GET":
            await self._answer(send, 405, {"error": "only GET is served"}, [(b"allow", b"GET")])
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            if path == LOG_PATH:
                body = await self._log(query)
            elif path == INFO_PATH:
                body = orjson.dumps(await self._info())
            else:
                await self._answer(send, 404, {
                    "error": f"no such endpoint {path!r}: fes serve answers {INFO_PATH} "
                             f"and {LOG_PATH}"
                })
                return
        except _BadRequest as error:
            await self._answer(send, 400, {"error": str(error)})
            return
        except StoreUnavailable as error:
            # the leader's database is down: said at once (the store does not
            # wait out its pool), logged once until a request succeeds again
            if not self._unavailable:
                self._unavailable = True
                logger.warning(
                    "the store is unavailable; answering 503 until it is back: %s", error,
                    extra={"app": self.store.app},
                )
            await self._answer(send, 503, {
                "error": f"the leader's store is unavailable: {error}", "store": "unavailable",
            })
            return
        except FesError as error:
            # the leader's store failed: the client may try again later
            logger.warning("the store failed a request from %s: %s", _client(scope), error)
            status = 503 if isinstance(error, StoreError) else 500
            await self._answer(send, status, {"error": f"the leader's store failed: {error}"})
            return
        if self._unavailable:
            self._unavailable = False
            # at the warning's level: a log that showed one shows the other
            logger.warning("the store is available again", extra={"app": self.store.app})
        await self._send(send, 200, body)

    # --- the endpoints ------------------------------------------------------------

    async def _info(self) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            last = self.store.last_position()
            oldest = self.store.read_log(0, limit=1)
            newest = self.store.read_log(last - 1, limit=1) if last else []
            return {
                "protocol": PROTOCOL,
                "app": self.store.app,
                "last_position": last,
                "max_limit": self.max_limit,
                "max_wait": self.max_wait,
                "oldest": _sample(oldest),
                "newest": _sample(newest),
            }

        return await self._run(self._readers, read)

    async def _log(self, query: str) -> bytes:
        after, limit, topics, to, wait = self._parse(query)
        if wait > 0:
            await self._wait(after, wait)
        store = self.store

        def read() -> bytes:
            last = store.last_position()
            rows = store.read_log(after, limit=limit, topics=topics, to=to) if limit else []
            # a commit between the two reads: the page's rows are visible too
            return encode_page(rows, max(last, rows[-1].position) if rows else last, limit)

        return await self._run(self._readers, read)

    def _parse(
        self, query: str
    ) -> tuple[int, int, list[str] | None, int | None, float]:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            raise _BadRequest(
                "the query cannot be read: write name=value pairs joined by &"
            ) from None
        after = 0
        limit = self.max_limit
        topics: list[str] | None = None
        to: int | None = None
        wait = 0.0
        seen: set[str] = set()
        for name, value in pairs:
            if name == "topics":
                topics = [*(topics or []), value]
                continue
            if name in seen:
                raise _BadRequest(f"{name!r} is given twice")
            seen.add(name)
            if name == "after":
                after = _integer(name, value)
            elif name == "limit":
                limit = min(_integer(name, value), self.max_limit)
            elif name == "to":
                to = _integer(name, value)
            elif name == "wait":
                try:
                    wait = float(value)
                except ValueError:
                    raise _BadRequest(f"wait must be a number of seconds, not {value!r}") from None
                if not 0 <= wait < math.inf:
                    raise _BadRequest(f"wait must be 0 or more seconds, not {value!r}")
                wait = min(wait, self.max_wait)
            else:
                raise _BadRequest(
                    f"unknown parameter {name!r}; /log takes after, limit, topics, to and wait"
                )
        try:
            check_log(after, to, limit, topics)
            # a position below 0 names none (they start at 1): refused, as the
            # application's log() refuses it, not read as "from the start"
            check_integer("after", after, 0)
            if to is not None:
                check_integer("to", to, 0)
        except StoreError as error:
            raise _BadRequest(str(error)) from None
        if limit < 0:
            raise _BadRequest(f"limit must be 0 or more, not {limit}")
        return after, limit, topics, to, wait

    async def _wait(self, after: int, seconds: float) -> None:
        """Return once the log has a position above ``after``, ``seconds`` pass, or we stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        store = self.store
        # a free waiting thread, or the wait passes: a long poll never queues
        # behind another in the pool, where its deadline could pass unseen
        while not self._free_waiters:
            if loop.time() >= deadline or self._stopping.is_set():
                return
            await asyncio.sleep(0.01)
        self._free_waiters -= 1
        try:
            while not self._stopping.is_set():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                if await self._run(self._waiters, store.wait, after, min(remaining, _SLICE)):
                    return
        finally:
            self._free_waiters += 1

    # --- plumbing -----------------------------------------------------------------

    def _authorised(self, scope: Scope) -> bool:
        if self._token is None:
            return True
        given: bytes | None = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
                break
        scheme, _, credential = (given or b"").partition(b" ")
        if given is None:
            reason = "no Authorization header"
        elif scheme.lower() != b"bearer":
            reason = "an Authorization header that is not a bearer token"
        elif hmac.compare_digest(credential.strip(), self._token):
            return True
        else:
            reason = "a wrong bearer token"
        logger.warning(
            "refused %s %s from %s: %s", scope.get("method", "?"), scope.get("path", "?"),
            _client(scope), reason,
        )
        return False

    @staticmethod
    async def _run(pool: ThreadPoolExecutor, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, call, *args)

    async def _answer(
        self, send: Send, status: int, document: dict[str, Any],
        headers: list[tuple[bytes, bytes]] = [],  # noqa: B006 - never mutated
    ) -> None:
        await self._send(send, status, orjson.dumps(document), headers)

    @staticmethod
    async def _send(
        send: Send, status: int, body: bytes,
        headers: list[tuple[bytes, bytes]] = [],  # noqa: B006 - never mutated
    ) -> None:
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        })
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _integer(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer, not {value!r}") from None


def _sample(rows: list[Any]) -> dict[str, Any] | None:
    if not rows:
        return None
    return {"position": rows[0].position, **sealing(rows[0].payload)}


def serve(
    store: Store,
    *,
    token: str | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    max_limit: int = DEFAULT_MAX_LIMIT,
    max_wait: float = DEFAULT_MAX_WAIT,
    until: threading.Event | None = None,
    ready: Callable[[int], None] | None = None,
) -> bool:
    """Serve ``store``'s log with uvicorn until ``until`` is set; False if it could not start.

    The caller handles signals (it sets ``until``): uvicorn's own handlers,
    which raise the signal again after shutting down, are not installed.
    ``ready`` is called with the bound port once the server listens.
    """
    try:
        import uvicorn
    except ModuleNotFoundError as error:  # pragma: no cover - the http extra is installed in tests
        raise ConfigurationError(
            "fes serve needs the http extra (uvicorn and httpx): pip install 'fes-events[http]'"
        ) from error
    application = LogServer(store, token=token, max_limit=max_limit, max_wait=max_wait)
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        log_config=None,  # fes's logging, as the command configured it
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
        server_header=False,
    )
    stop = until or threading.Event()

    told: list[bool] = []

    class Server(uvicorn.Server):
        def install_signal_handlers(self) -> None:  # pragma: no cover - older uvicorn
            pass

        def capture_signals(self) -> Any:
            import contextlib

            return contextlib.nullcontext()

        async def on_tick(self, counter: int) -> bool:
            # called every 0.1 s once the server listens
            if stop.is_set():
                self.should_exit = True
                application.stop()
            if ready is not None and not told:
                told.append(True)
                sockets = [s for server in self.servers for s in server.sockets]
                ready(sockets[0].getsockname()[1] if sockets else port)
            return await super().on_tick(counter)

    server = Server(config)
    try:
        server.run()
    except SystemExit:  # uvicorn's way of saying that it could not bind or start
        return False
    finally:
        application.close()
    return server.started
