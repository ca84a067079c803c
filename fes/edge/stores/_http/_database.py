"""A leader in another service: its notification log, read over HTTP from ``fes serve``.

:class:`HttpDatabase` opens ``http://`` and ``https://`` URLs (the address
``fes serve`` answers at).  Its one store is the served application's,
read-only: the log's reads and waits go over the wire, rows arrive exactly as
the leader's store holds them, and every write raises
:class:`fes.errors.StoreError`.  Requests are retried with a growing pause on
connection errors and on 502, 503 and 504 answers (every request is a
``GET``, so trying again is harmless); a server that still cannot be reached
raises :class:`fes.errors.StoreUnavailable` (``transient``), a refused token
one that is not transient.  Messages name the URL, never the token.
"""

from __future__ import annotations

import os
import re
import ssl
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NoReturn, Protocol

import httpx

from fes.edge._settings import prefixed, setting
from fes.edge.stores._base import (
    ClosingDatabase,
    NewEvent,
    Resealed,
    StoredEvent,
    StoredSnapshot,
    Tracking,
)
from fes.edge.stores._checks import check_app_name, check_integer, check_log, check_timeout
from fes.edge.stores._urls import (
    StoreURL,
    check_ports,
    option_float,
    option_int,
    parse_url,
    take_options,
)
from fes.errors import ConfigurationError, StoreError, StoreUnavailable

from ._wire import INFO_PATH, LOG_PATH, WireError, decode_info, decode_page

__all__ = ["DEFAULT_RETRIES", "DEFAULT_TIMEOUT", "HttpDatabase", "HttpStore", "Reader"]

#: Seconds to wait for a connection, and for an answer beyond a long poll's own wait.
DEFAULT_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 5.0
#: How many times a request is tried again after a connection error or a 502/503/504.
DEFAULT_RETRIES = 2
#: The pause before the first retry; it doubles, up to _MAX_PAUSE.
_FIRST_PAUSE = 0.1
_MAX_PAUSE = 2.0

def _cafile(name: str, value: object) -> str:
    """A file of CA certificates (PEM) to trust for https://, instead of the system's."""
    if not isinstance(value, str) or not value:
        raise ValueError("expected the path of a PEM file of CA certificates")
    if not os.path.isfile(value):
        raise ValueError("there is no such file")
    return value


OPTIONS = {
    "timeout": option_float(0.0),
    "connect_timeout": option_float(0.0),
    "retries": option_int(0),
    "cafile": _cafile,
}

#: Rows a long poll brings back with it, for the read that follows (a follower's
#: batch, at most).
_PREFETCH = 500
#: Seconds those rows stay the answer to that read.
_FRESH = 1.0
#: Seconds the server's last position answers a read after it with nothing.
_FRESH_END = 0.05

#: What a bearer token may hold: printable ASCII, no space (an HTTP header carries it).
_TOKEN = re.compile(r"[\x21-\x7e]+")

#: The variable holding the bearer token (also ``<APP>_FES_HTTP_TOKEN``).
TOKEN_VAR = "FES_HTTP_TOKEN"


class HttpDatabase(ClosingDatabase):
    """The notification log ``fes serve`` serves at ``url``, read-only.

    ``token`` is the bearer token; None reads ``<APP>_FES_HTTP_TOKEN``,
    then ``FES_HTTP_TOKEN``, from ``env`` (``os.environ``) for the
    application a store is asked for.  A URL never holds the token.
    ``timeout`` bounds each answer (beyond a long poll's own wait),
    ``connect_timeout`` each connection, ``retries`` the tries again after
    a connection error, ``cafile`` names the CA certificates (PEM) an
    ``https://`` server's certificate must chain to, instead of the
    system's; the URL's ``?timeout=&connect_timeout=&retries=&cafile=`` set
    them too (keywords win).
    """

    #: A leader served by another service: read here, never written or run.
    read_only = True

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        parsed = parse_url(url)
        if parsed.scheme not in ("http", "https"):
            raise parsed.error("an HTTP leader's URL starts with http:// or https://")
        _refuse_credentials(parsed)
        values = take_options(parsed, options, OPTIONS)
        host = parsed.rest.partition("/")[0]
        if not host or parsed.rest.startswith("/"):
            raise parsed.error(f"it names no host: write {parsed.scheme}://host:port/path")
        check_ports(parsed)
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ConfigurationError(
                f"the bearer token for {parsed.safe} must be a non-empty string, or None to "
                f"read {TOKEN_VAR}"
            )
        self._parsed = parsed
        self._base = f"{parsed.scheme}://{parsed.rest.rstrip('/')}"
        self._token = token
        self._env = os.environ if env is None else env
        self.timeout: float = values.get("timeout", DEFAULT_TIMEOUT)
        self.connect_timeout: float = values.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        self.retries: int = values.get("retries", DEFAULT_RETRIES)
        cafile: str | None = values.get("cafile")
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
            follow_redirects=False,
            headers={"accept": "application/json"},
            # the system's CAs (or SSL_CERT_FILE's), unless the URL names a file of its own
            verify=True if cafile is None else ssl.create_default_context(cafile=cafile),
        )
        self._lock = threading.Lock()
        self._stores: dict[str, HttpStore] = {}
        self.closed = False

    @property
    def url(self) -> str:
        """The URL this database was opened with (it holds no secret)."""
        return self._parsed.safe

    def __repr__(self) -> str:
        return f"<HttpDatabase {self.url}>"

    def token_for(self, app: str | None) -> str | None:
        """The bearer token sent for ``app``: the given one, else the environment's."""
        token = self._token if self._token is not None else setting(self._env, TOKEN_VAR, app)
        if token is not None and not _TOKEN.fullmatch(token):
            # never echoed: the message would put a secret in a log
            where = "token=" if self._token is not None else (
                TOKEN_VAR if app is None else f"{prefixed(app, TOKEN_VAR)} or {TOKEN_VAR}"
            )
            raise ConfigurationError(
                f"the bearer token for {self.url} (from {where}) holds a space, a control "
                "or a non-ASCII character, which an HTTP header cannot carry"
            )
        return token

    def store(self, app: str) -> HttpStore:
        """The served application's store; ConfigurationError for any other name.

        The server is asked which application it serves; when it cannot be
        reached now, the store is returned and checks on its first use.
        """
        check_app_name(app)
        with self._lock:
            self._check_open()
            found = self._stores.get(app)
            if found is None:
                found = self._stores[app] = HttpStore(self, app)
        try:
            found.info()
        except StoreUnavailable as error:
            if not error.transient:
                raise
        return found

    def apps(self) -> list[str]:
        """The one application the server serves."""
        with self._lock:
            known = next(iter(self._stores), None)
        return [str(self.info(known)["app"])]

    def close(self) -> None:
        """Close the connections; the stores raise StoreError after."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        self._client.close()

    # --- requests -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise StoreError(f"the database {self.url} is closed")

    def info(self, app: str | None) -> dict[str, Any]:
        """The server's info document, asked with ``app``'s token."""
        try:
            return decode_info(self.get(INFO_PATH, {}, app))
        except WireError as error:
            raise self._not_fes(INFO_PATH, str(error)) from None

    def get(
        self, path: str, params: Mapping[str, Any], app: str | None, wait: float = 0.0
    ) -> bytes:
        """The body of a 200 answer to ``GET path``, trying again on connection errors."""
        self._check_open()
        token = self.token_for(app)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        url = self._base + path
        timeout = httpx.Timeout(self.timeout + wait, connect=self.connect_timeout)
        pause = _FIRST_PAUSE
        problem = ""
        store_down = False
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(pause)
                pause = min(pause * 2, _MAX_PAUSE)
            store_down = False
            try:
                response = self._client.get(url, params=params, headers=headers, timeout=timeout)
            except httpx.TransportError as error:
                if self.closed:
                    self._check_open()
                if "CERTIFICATE_VERIFY_FAILED" in str(error):
                    raise StoreUnavailable(
                        f"the HTTP leader {self.url} has a certificate this client does not "
                        f"trust ({error}): give the file of its CA as ?cafile=PATH (or "
                        "SSL_CERT_FILE)",
                        transient=False,
                    ) from None
                problem = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                continue
            except RuntimeError as error:  # httpx's "client has been closed"
                self._check_open()
                raise StoreError(f"{self.url}: {error}") from None
            status = response.status_code
            if status == 200:
                return response.content
            if status in (502, 503, 504):
                problem = f"it answered {status}{_said(response)}"
                store_down = status == 503 and _store_down(response)
                continue
            self._refuse(response, path, app, token)
        tries = f"{self.retries + 1} tr{'y' if not self.retries else 'ies'}"
        if store_down:
            raise StoreUnavailable(
                f"the HTTP leader {self.url} answers, but its store is unavailable "
                f"({tries}): {problem}; the leader's database is down or unreachable "
                "from fes serve",
                transient=True,
            )
        raise StoreUnavailable(
            f"the HTTP leader {self.url} cannot be reached ({tries}): {problem}; "
            "is fes serve running there?",
            transient=True,
        )

    def _refuse(
        self, response: httpx.Response, path: str, app: str | None, token: str | None
    ) -> NoReturn:
        status = response.status_code
        if status == 401:
            names = TOKEN_VAR if app is None else f"{prefixed(app, TOKEN_VAR)} or {TOKEN_VAR}"
            given = (
                "the token given" if self._token is not None
                else f"the token in {names}" if token else f"no token ({names} is unset)"
            )
            raise StoreUnavailable(
                f"the HTTP leader {self.url} refused {given} (401): give the token its "
                "fes serve checks (FES_SERVE_TOKEN there)",
                transient=False,
            )
        if status == 404:
            raise self._not_fes(path, "it answered 404")
        raise StoreError(f"the HTTP leader {self.url} answered {status} to {path}{_said(response)}")

    def _not_fes(self, path: str, problem: str) -> StoreUnavailable:
        return StoreUnavailable(
            f"the HTTP leader {self.url} is not a log fes serve serves: {problem} to {path}; "
            "give the address fes serve listens at (the URL it printed)",
            transient=False,
        )


def _said(response: httpx.Response) -> str:
    """The error message of a fes serve answer, if it has one."""
    try:
        error = response.json().get("error")
    except Exception:
        return ""
    return f": {error}" if isinstance(error, str) else ""


def _store_down(response: httpx.Response) -> bool:
    """Whether a 503 of fes serve says that its store cannot reach its database."""
    try:
        return bool(response.json().get("store") == "unavailable")
    except Exception:
        return False


def _refuse_credentials(url: StoreURL) -> None:
    authority = url.rest.partition("/")[0]
    if "@" in authority:
        raise url.error(
            f"an HTTP leader's URL holds no user or password: give the bearer token in "
            f"{TOKEN_VAR} (or <APP>_{TOKEN_VAR}), or as token="
        )
    for name in url.options:
        if name.lower() in ("token", "access_token", "key", "password"):
            raise url.error(
                f"option {name!r}: a URL is no place for a secret; give the bearer token in "
                f"{TOKEN_VAR} (or <APP>_{TOKEN_VAR}), or as token="
            )


class _Codec(Protocol):
    @property
    def cipher(self) -> Any: ...


class Reader(Protocol):
    """What :meth:`HttpStore.check_decodable` needs of an :class:`fes.edge.Application`."""

    @property
    def name(self) -> str: ...

    @property
    def codec(self) -> _Codec: ...


class HttpStore:
    """The store of the one application ``fes serve`` serves: its log, read-only."""

    def __init__(self, database: HttpDatabase, app: str) -> None:
        self._database = database
        self._app = app
        self._info: dict[str, Any] | None = None
        # A follower woken by an event reads it, commits, reads again (nothing) and
        # waits: three requests.  Two are saved.  The page a long poll brought back
        # (after, rows, bound, when) answers the read that follows it; and the
        # server's last position with when it came (the latest answer's) answers a
        # read after it with nothing, for a moment, since the wait that follows it
        # returns at once if anything came meanwhile.  Reads stay monotonic: a read
        # never answers nothing past a position this client has seen.
        self._prefetched: tuple[int, list[StoredEvent], int, float] | None = None
        self._latest: tuple[int, float] = (-1, 0.0)
        self._prefetch_lock = threading.Lock()

    @property
    def app(self) -> str:
        """The application whose log this is."""
        return self._app

    @property
    def url(self) -> str:
        """The served log's URL."""
        return self._database.url

    def __repr__(self) -> str:
        return f"<HttpStore {self._app!r} at {self.url}>"

    def info(self, *, fresh: bool = False) -> dict[str, Any]:
        """The server's info document; the first one checks the application's name."""
        known = self._info
        if known is not None and not fresh:
            return known
        found = self._database.info(self._app)
        served = found["app"]
        if served != self._app:
            raise ConfigurationError(
                f"the HTTP leader {self.url} serves application {served!r}, not {self._app!r}: "
                f"name {served!r} there, or give the address that serves {self._app!r}"
            )
        self._info = found
        return found

    def check_decodable(self, reader: Reader) -> None:
        """Refuse ``reader`` (the Application reading this log) if it could not decode it.

        See :func:`fes.edge.stores._http.check_decodable`.
        """
        info = self.info(fresh=True)
        cipher = reader.codec.cipher
        keys = f"{prefixed(reader.name, 'FES_CIPHER_KEYS')} (or FES_CIPHER_KEYS)"
        for which in ("oldest", "newest"):
            sample = info.get(which)
            if not isinstance(sample, dict):
                continue
            where = (
                f"the {which} event of {self._app!r} served at {self.url} "
                f"(position {sample.get('position')})"
            )
            if sample.get("encrypted"):
                key = sample.get("key_id")
                if cipher is None:
                    raise ConfigurationError(
                        f"{where} is encrypted under key {key!r}, and the application reading "
                        f"it has no cipher: set {keys} to the leader's keys, or pass cipher="
                    )
                if key not in cipher.key_ids:
                    raise ConfigurationError(
                        f"{where} is encrypted under key {key!r}, which the reading "
                        f"application's cipher does not hold (it holds "
                        f"{', '.join(sorted(cipher.key_ids))}): add the leader's key to {keys}"
                    )
            elif cipher is not None:
                raise ConfigurationError(
                    f"{where} is not encrypted, and the application reading it has a cipher, "
                    f"which reads only encrypted payloads: read this leader without one "
                    f"({prefixed(reader.name, 'FES_CIPHER_KEYS')}=none, which keeps "
                    "FES_CIPHER_KEYS for the other applications)"
                )

    def _page(
        self, params: dict[str, Any], wait: float = 0.0
    ) -> tuple[list[StoredEvent], int, int]:
        if self._info is None:
            self.info()
        body = self._database.get(LOG_PATH, params, self._app, wait)
        try:
            page = decode_page(body)
        except WireError as error:
            raise StoreError(
                f"the HTTP leader {self.url} sent a page fes cannot read: {error}"
            ) from None
        with self._prefetch_lock:
            if page[1] >= self._latest[0]:
                self._latest = (page[1], time.monotonic())
        return page

    # --- the log ---------------------------------------------------------------------

    def read_log(
        self,
        after: int = 0,
        *,
        limit: int | None = None,
        topics: Collection[str] | None = None,
        to: int | None = None,
    ) -> list[StoredEvent]:
        """Events with ``after < position <= to``, in position order, page by page."""
        check_log(after, to, limit, topics)
        self._database._check_open()
        after = max(after, 0)  # positions start at 1 (and the server takes no negative one)
        if limit == 0 or (topics is not None and not topics) or (to is not None and to <= after):
            return []
        rows: list[StoredEvent] = []
        with self._prefetch_lock:
            latest, seen = self._latest
        if latest <= after and time.monotonic() - seen < _FRESH_END:
            return []  # nothing past ``after`` a moment ago; the next wait asks anew
        if topics is None and to is None:
            with self._prefetch_lock:
                found, self._prefetched = self._prefetched, None
            if found is not None and found[0] == after and time.monotonic() - found[3] < _FRESH:
                rows = found[1] if limit is None else found[1][:limit]
                if len(found[1]) < found[2] or (limit is not None and len(rows) >= limit):
                    return rows  # the page ended the log as the server saw it a moment ago
                after = rows[-1].position
        while True:
            params: dict[str, Any] = {"after": after}
            wanted = None if limit is None else limit - len(rows)
            if wanted is not None:
                params["limit"] = wanted
            if topics is not None:
                params["topics"] = list(topics)
            if to is not None:
                params["to"] = to
            page, _, bound = self._page(params)
            rows.extend(page)
            if len(page) < bound or not page or (limit is not None and len(rows) >= limit):
                return rows
            after = page[-1].position

    def last_position(self) -> int:
        """The highest position the server can see now."""
        return self._page({"after": 0, "limit": 0})[1]

    def wait(self, after: int, timeout: float) -> bool:
        """Long-poll until a position above ``after`` is visible, or ``timeout`` passes."""
        check_integer("after", after)
        after = max(after, 0)  # positions start at 1: the empty log has none above -1
        seconds = check_timeout(timeout)
        deadline = time.monotonic() + seconds
        while True:
            remaining = max(deadline - time.monotonic(), 0.0)
            wait = round(remaining, 3)
            rows, last, bound = self._page(
                {"after": after, "limit": _PREFETCH, "wait": wait}, wait
            )
            if rows:
                with self._prefetch_lock:
                    self._prefetched = (after, rows, bound, time.monotonic())
            if last > after:
                return True
            if time.monotonic() >= deadline:
                return False

    # --- what the HTTP log does not serve ---------------------------------------------

    def _read_only(self, what: str) -> NoReturn:
        raise StoreError(
            f"{self._app!r} at {self.url} is a read-only HTTP leader: {what} is refused "
            "(a follower writes to its own store)"
        )

    def _not_served(self, what: str, method: str) -> NoReturn:
        # what, in words: the caller may have asked the application for a state,
        # and never called the store's method itself
        raise StoreError(
            f"{self._app!r} at {self.url} is an HTTP leader, which serves only its "
            f"notification log: {what} ({method}) is not available over HTTP"
        )

    def append(
        self, events: Sequence[NewEvent], *, tracking: Tracking | None = None
    ) -> list[int]:
        """Refused: the HTTP log is read-only."""
        self._read_only("append")

    def reseal(self, rows: Sequence[Resealed]) -> None:
        """Refused: the HTTP log is read-only."""
        self._read_only("reseal")

    def save_snapshot(self, snapshot: StoredSnapshot) -> None:
        """Refused: the HTTP log is read-only."""
        self._read_only("save_snapshot")

    def delete_snapshots(self, *, keep: Collection[str]) -> int:
        """Refused: the HTTP log is read-only."""
        self._read_only("delete_snapshots")

    def save_view(self, name: str, payload: bytes, tracking: Tracking) -> None:
        """Refused: the HTTP log is read-only."""
        self._read_only("save_view")

    def read_stream(
        self,
        stream: str,
        *,
        from_version: int | None = None,
        to_version: int | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[StoredEvent]:
        """Not served: only the notification log crosses the wire."""
        self._not_served("reading a stream's events", "read_stream")

    def read_payloads(
        self, stream: str, *, from_version: int | None = None, to_version: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        """Not served: only the notification log crosses the wire."""
        self._not_served("reading a stream's events", "read_payloads")

    def stream_version(self, stream: str) -> int:
        """Not served: only the notification log crosses the wire."""
        self._not_served("a stream's version", "stream_version")

    def stream_versions(self, streams: Collection[str]) -> dict[str, int]:
        """Not served: only the notification log crosses the wire."""
        self._not_served("streams' versions", "stream_versions")

    def load_snapshot(
        self, stream: str, *, to_version: int | None = None
    ) -> StoredSnapshot | None:
        """None: snapshots are not served (a follower folds no leader stream)."""
        self._database._check_open()
        return None

    def last_tracked(self, leader: str) -> int:
        """0: the HTTP log serves no tracking positions."""
        self._database._check_open()
        return 0

    def tracked(self) -> dict[str, int]:
        """Empty: the HTTP log serves no tracking positions."""
        self._database._check_open()
        return {}

    def load_view(self, name: str) -> tuple[bytes, int] | None:
        """None: views are not served."""
        self._database._check_open()
        return None
