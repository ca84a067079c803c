"""A throwaway PostgreSQL server for tests.

``PgServer`` runs ``initdb`` into a fresh temporary directory, starts a postmaster
listening only on 127.0.0.1 (and a Unix socket inside the temporary directory) on a
free port, and tears everything down again on ``stop()``. An ``atexit`` hook stops
a server that a crashed test session forgot about.

PostgreSQL refuses to run as root, so when the tests run as root every server
command goes through ``runuser -u postgres --`` and the temporary directory is
chowned to ``postgres``.

Binaries are looked up in ``$FES_PG_BIN``, then ``/usr/lib/postgresql/15/bin``, then
any ``/usr/lib/postgresql/*/bin`` holding ``initdb``, then ``$PATH``. If none are
found ``start()`` raises ``RuntimeError``: tests that need the server fail loudly
rather than being skipped.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psycopg
from psycopg import sql

__all__ = ["PgServer", "find_pg_bin"]

_PG_USER = "postgres"
_DEFAULT_BIN = "/usr/lib/postgresql/15/bin"
_REQUIRED = ("initdb", "pg_ctl")
_START_ATTEMPTS = 3
_LOG_TAIL_CHARS = 4000
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _has_binaries(directory: str) -> bool:
    return all(os.access(os.path.join(directory, name), os.X_OK) for name in _REQUIRED)


def find_pg_bin() -> str:
    """Return the directory holding ``initdb`` and ``pg_ctl``, or raise RuntimeError."""
    tried: list[str] = []
    env_bin = os.environ.get("FES_PG_BIN")
    if env_bin:
        if _has_binaries(env_bin):
            return env_bin
        raise RuntimeError(
            f"FES_PG_BIN={env_bin!r} does not contain executable {' and '.join(_REQUIRED)}"
        )
    candidates = [_DEFAULT_BIN, *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for candidate in candidates:
        tried.append(candidate)
        if _has_binaries(candidate):
            return candidate
    found = [shutil.which(name) for name in _REQUIRED]
    if all(found):
        dirs = {os.path.dirname(path) for path in found if path}
        if len(dirs) == 1:
            return dirs.pop()
    tried.append("$PATH")
    raise RuntimeError(
        "PostgreSQL server binaries not found: need executable "
        f"{' and '.join(_REQUIRED)} in $FES_PG_BIN or one of {', '.join(tried)}. "
        "Install PostgreSQL (e.g. apt-get install postgresql) or set FES_PG_BIN."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    return text[-_LOG_TAIL_CHARS:]


class PgServer:
    """A private PostgreSQL server in a temporary directory, for tests.

    Use as a context manager or call ``start()``/``stop()``. After ``start()``,
    ``host``, ``port`` and ``dsn`` (a libpq URL for the ``postgres`` database as
    superuser ``postgres``, trust authentication) are set.
    """

    host: str
    port: int

    def __init__(self, *, bin_dir: str | None = None, durable: bool = False) -> None:
        """``durable=True`` keeps the server's default ``fsync=on`` (benchmarks).

        The tests leave it off: they need no flush to disk, and run faster.
        """
        self.host = "127.0.0.1"
        self.durable = durable
        self.port = 0
        self._bin_dir = bin_dir
        self._as_root = os.geteuid() == 0
        self._tmpdir: Path | None = None
        self._running = False

    # -- public API ---------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """libpq URL of the ``postgres`` database; only valid while running."""
        return self.url("postgres")

    @property
    def running(self) -> bool:
        return self._running

    @property
    def data_dir(self) -> Path:
        return self._require_tmpdir() / "data"

    @property
    def log_file(self) -> Path:
        return self._require_tmpdir() / "postgres.log"

    def url(self, dbname: str) -> str:
        """libpq URL of database ``dbname`` on this server."""
        if not self._running:
            raise RuntimeError("PgServer is not running")
        return f"postgresql://{_PG_USER}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def start(self) -> PgServer:
        """Create the cluster and start the server; returns ``self``."""
        if self._running:
            raise RuntimeError("PgServer already started")
        bin_dir = self._bin_dir = self._bin_dir or find_pg_bin()
        if self._as_root and shutil.which("runuser") is None:
            raise RuntimeError("running as root but `runuser` is not available")
        tmpdir = Path(tempfile.mkdtemp(prefix="fes-pg-", dir="/tmp"))
        self._tmpdir = tmpdir
        atexit.register(self.stop)
        try:
            if self._as_root:
                shutil.chown(tmpdir, user=_PG_USER, group=None)
            self._run(
                [
                    os.path.join(bin_dir, "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-A",
                    "trust",
                    "-U",
                    _PG_USER,
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                what="initdb",
            )
            self._start_postmaster(bin_dir)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (immediate shutdown) and delete its directory. Idempotent."""
        if self._tmpdir is None:
            return
        try:
            # Check the pid file rather than ``_running``: a failed or timed-out
            # ``pg_ctl start`` may still have left a postmaster behind.
            if (self.data_dir / "postmaster.pid").exists():
                bin_dir = self._bin_dir or find_pg_bin()
                self._run(
                    [
                        os.path.join(bin_dir, "pg_ctl"),
                        "stop",
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "immediate",
                        "-w",
                        "-t",
                        "60",
                    ],
                    what="pg_ctl stop",
                    check=False,
                )
        finally:
            self._cleanup()

    def crash(self) -> None:
        """Stop the server as a crash would (``pg_ctl stop -m immediate``), keeping its data.

        Clients lose their connections at once; :meth:`restart` brings the
        server back on the same port, recovering from its write-ahead log.
        """
        self._run(
            [os.path.join(self._bin_dir or find_pg_bin(), "pg_ctl"), "stop", "-D",
             str(self.data_dir), "-m", "immediate", "-w", "-t", "60"],
            what="pg_ctl stop -m immediate",
        )
        self._running = False

    def restart(self) -> None:
        """Start a crashed server again, on the port it had."""
        if self._running:
            raise RuntimeError("PgServer is running")
        self._start_postmaster(self._bin_dir or find_pg_bin(), port=self.port)

    def create_database(self, name: str) -> str:
        """Create a fresh database ``name`` and return its libpq URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"invalid database name {name!r}")
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------

    def _require_tmpdir(self) -> Path:
        if self._tmpdir is None:
            raise RuntimeError("PgServer has not been started")
        return self._tmpdir

    def _start_postmaster(self, bin_dir: str, port: int = 0) -> None:
        tmpdir = self._require_tmpdir()
        last_error = ""
        fixed = port
        # The free-port probe is racy (another process may grab the port before the
        # postmaster binds it), so retry with a new port a few times.
        for _ in range(_START_ATTEMPTS):
            port = fixed or _free_port()
            options = (
                f"-p {port} -k {tmpdir} -c listen_addresses=127.0.0.1"
                f"{'' if self.durable else ' -c fsync=off'} -c max_connections=200"
            )
            result = self._run(
                [
                    os.path.join(bin_dir, "pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-o",
                    options,
                ],
                what="pg_ctl start",
                check=False,
            )
            if result.returncode == 0:
                self.port = port
                self._running = True
                return
            last_error = (
                f"pg_ctl start failed (exit {result.returncode}) on port {port}\n"
                f"--- pg_ctl output ---\n{result.stdout}{result.stderr}"
                f"--- server log {self.log_file} ---\n{_tail(self.log_file)}"
            )
            if "Address already in use" not in _tail(self.log_file):
                break
        raise RuntimeError(last_error)

    def _run(
        self, argv: list[str], *, what: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        if self._as_root:
            argv = ["runuser", "-u", _PG_USER, "--", *argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        result = subprocess.run(
            argv,
            cwd=str(self._require_tmpdir()),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def _cleanup(self) -> None:
        tmpdir = self._tmpdir
        self._running = False
        self._tmpdir = None
        atexit.unregister(self.stop)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
