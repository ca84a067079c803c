"""A leader in another service: its log served by ``fes serve``, read by an http(s):// store.

Most tests serve a store from a thread of this process (the same uvicorn
server ``fes serve`` runs); those about the command itself (a kill and a
restart, the log line of a refused token, the signals) start ``fes serve``
in a subprocess on a free port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from system import domain
from system.helpers import assert_exactly_once, send

from fes.edge import Application, Cipher, Codec
from fes.edge._follower import Follower
from fes.edge._http_serve import LogServer, serve
from fes.edge.stores import NewEvent, Store, open_database
from fes.edge.stores._http import HttpDatabase, HttpStore, check_decodable
from fes.edge.stores._http._wire import WireError, decode_info, decode_page, sealing
from fes.errors import ConfigurationError, StoreError, StoreUnavailable, StoreURLError

TOKEN = "t0ken-of-the-test-5f2a"
KEY = bytes(range(32))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def served(store: Store, *, token: str | None = TOKEN, **options: Any) -> Iterator[str]:
    """Serve ``store``'s log from a thread of this process; yields the URL."""
    stop = threading.Event()
    ports: queue.Queue[int] = queue.Queue()
    outcome: list[bool] = []
    thread = threading.Thread(
        target=lambda: outcome.append(
            serve(store, token=token, port=0, until=stop, ready=ports.put, **options)
        ),
        daemon=True,
    )
    thread.start()
    try:
        scheme = "https" if options.get("ssl_certfile") else "http"
        yield f"{scheme}://127.0.0.1:{ports.get(timeout=20)}"
    finally:
        stop.set()
        thread.join(20)
    assert outcome == [True], "the server did not start and stop cleanly"


class ServeProcess:
    """``fes serve`` in a subprocess, its stderr collected line by line."""

    def __init__(self, store_url: str, app: str, port: int, env: dict[str, str]) -> None:
        self.args = [sys.executable, "-m", "fes.edge._cli", "serve", "--store", store_url,
                     "--app", app, "--port", str(port)]
        self.env = env
        self.port = port
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> ServeProcess:
        self.process = subprocess.Popen(
            self.args, env=self.env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        started = threading.Event()
        stream = self.process.stderr
        assert stream is not None

        def drain() -> None:
            for line in stream:
                self.lines.append(line)
                if "fes: serving" in line:
                    started.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + 30
        while not started.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"fes serve did not start: {''.join(self.lines)}")
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FES_")}
    env.update(extra)
    return env


@pytest.fixture
def leader_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'leader.db'}?synchronous=NORMAL"


def _reader(url: str, **options: Any) -> Application:
    """The follower side's reader of the served ``source`` log."""
    return Application(domain.source, store=open_database(url, token=TOKEN, **options))


# --- the wire -----------------------------------------------------------------------------


@pytest.mark.parametrize("sealing", ["plain", "compressed", "encrypted"])
def test_rows_cross_the_wire_byte_for_byte_as_stored(leader_url: str, sealing: str) -> None:
    """Every row read over HTTP equals the stored row: ciphertext stays ciphertext."""
    cipher = Cipher({"k1": KEY}, "k1") if sealing == "encrypted" else None
    with Application(domain.source, store=leader_url, compress=sealing == "compressed",
                     cipher=cipher, env={}) as leader:
        send(leader, range(40))
        stored = leader.store.read_log(0)
        with served(leader.store, max_limit=7) as url, open_database(url, token=TOKEN) as http:
            found = http.store("source").read_log(0)
            assert found == stored
            assert all(type(row.payload) is bytes for row in found)
            if sealing == "encrypted":
                assert all(b"number" not in row.payload for row in found)
            assert http.store("source").last_position() == leader.store.last_position() == 40
            assert http.apps() == ["source"]


def test_pages_of_the_log_over_http_equal_the_stores_own(leader_url: str) -> None:
    """after, limit, topics and to select what the store selects, across pages of 7."""
    with Application(domain.source, store=leader_url) as leader:
        send(leader, range(30))
        leader.store.append([NewEvent("r-1", 1, "receipt.Received", b'{"number":1}', 1)])
        store = leader.store
        with served(store, max_limit=7) as url, open_database(url, token=TOKEN) as http:
            remote = http.store("source")

            @settings(max_examples=60, deadline=None)
            @given(
                after=st.integers(-2, 34),
                limit=st.none() | st.integers(0, 40),
                topics=st.none() | st.sets(st.sampled_from(["message.Sent", "receipt.Received",
                                                             "other"])),
                to=st.none() | st.integers(-1, 34),
            )
            def agree(after: int, limit: int | None, topics: set[str] | None,
                      to: int | None) -> None:
                expected = store.read_log(after, limit=limit, topics=topics, to=to)
                assert remote.read_log(after, limit=limit, topics=topics, to=to) == expected

            agree()


def test_the_info_says_how_the_log_is_sealed(leader_url: str) -> None:
    """/info names the app, the last position, the protocol and the key id, never a key."""
    with Application(domain.source, store=leader_url, compress=True,
                     cipher=Cipher({"k7": KEY}, "k7"), env={}) as leader:
        send(leader, range(3))
        with served(leader.store) as url:
            answer = httpx.get(f"{url}/info", headers={"authorization": f"Bearer {TOKEN}"})
    info = answer.json()
    assert info["protocol"] == 1 and info["app"] == "source" and info["last_position"] == 3
    for which in ("oldest", "newest"):
        assert info[which]["encrypted"] is True and info[which]["key_id"] == "k7"
        # payloads this small are not worth compressing, and are not
        assert info[which]["compressed"] is False
    assert (info["oldest"]["position"], info["newest"]["position"]) == (1, 3)
    assert KEY.hex() not in answer.text


def test_the_sealing_of_a_payload_is_read_from_its_header() -> None:
    """Format-0 JSON is plain; format-1 flags say compressed and encrypted, and the key id."""
    assert sealing(b'{"a":1}') == {"encrypted": False, "compressed": False, "key_id": None}
    assert sealing(bytes((0x81,)) + zlib.compress(b'{"a":1}'))["compressed"] is True
    codec = Codec([domain.messages], compress=True, cipher=Cipher({"k9": KEY}, "k9"))
    _, payload = codec.encode(domain.Sent(10**30 // 10**29), stream="m", version=1)
    assert sealing(payload) == {"encrypted": True, "compressed": False, "key_id": "k9"}


def test_a_bad_query_is_a_400_that_says_what_is_wrong(leader_url: str) -> None:
    """Unknown parameters, non-integers and a repeated parameter are refused by name."""
    with Application(domain.source, store=leader_url) as leader, served(leader.store) as url:
        auth = {"authorization": f"Bearer {TOKEN}"}
        for query, said in [
            ("after=x", "after must be an integer"),
            ("after=1&after=2", "'after' is given twice"),
            ("since=3", "unknown parameter 'since'"),
            ("wait=-1", "wait must be 0 or more"),
            ("limit=-1", "limit must be an integer of 0 or more"),
            # (they used to answer 200, with the whole log and with no rows)
            ("after=-5", "after must be an integer of 0 or more"),
            ("to=-1", "to must be an integer of 0 or more"),
        ]:
            answer = httpx.get(f"{url}/log?{query}", headers=auth)
            assert answer.status_code == 400, query
            assert said in answer.json()["error"], query
        assert httpx.get(f"{url}/nothing", headers=auth).status_code == 404
        assert httpx.post(f"{url}/log", headers=auth).status_code == 405


def _certificate(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fes test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(
            ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert, private = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return str(cert), str(private)


def test_tls_by_uvicorns_options_and_a_ca_file_of_ones_own(
    leader_url: str, tmp_path: Path
) -> None:
    """https:// with --ssl-certfile/--ssl-keyfile; an untrusted certificate fails at once."""
    cert, key = _certificate(tmp_path)
    with Application(domain.source, store=leader_url) as leader:
        send(leader, range(4))
        with served(leader.store, ssl_certfile=cert, ssl_keyfile=key) as url:
            assert url.startswith("https://")
            with open_database(f"{url}?cafile={cert}", token=TOKEN) as http:
                assert http.store("source").read_log(0) == leader.store.read_log(0)
            with pytest.raises(StoreUnavailable, match=r"does not trust.*cafile") as untrusted:
                open_database(url, token=TOKEN, retries=3).store("source")
            assert not untrusted.value.transient
    with pytest.raises(StoreURLError, match="no such file"):
        open_database(f"https://127.0.0.1:1?cafile={tmp_path / 'none.pem'}")


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"<html>", "not a page of the log"),
        (b'{"last": 1, "limit": 5}', "not a page of the log"),
        (b'{"last": "1", "limit": 5, "rows": []}', "last position is '1'"),
        (b'{"last": 1, "limit": 5, "rows": [[1, 2, 3, "t", 0, "", null]]}', "wrong types"),
        (b'{"last": 1, "limit": 5, "rows": [[1, "s", 1, "t", 0, "***", null]]}', "not a page"),
    ],
)
def test_a_page_that_is_not_one_is_refused(body: bytes, said: str) -> None:
    """Whatever a server sends, a client decodes rows of the right shape or refuses."""
    with pytest.raises(WireError, match=said):
        decode_page(body)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"nope", "not JSON"),
        (b"[]", "not the info document"),
        (b'{"protocol": 2, "app": "a", "last_position": 0}', "speaks protocol 2"),
        (b'{"protocol": 1, "app": 5, "last_position": 0}', "its 'app' is 5"),
    ],
)
def test_an_info_that_is_not_one_is_refused(body: bytes, said: str) -> None:
    """Another protocol version, or another document, is refused by name."""
    with pytest.raises(WireError, match=said):
        decode_info(body)


def test_an_address_that_is_not_fes_serve_is_refused_at_once(leader_url: str) -> None:
    """A 404 (a wrong path) is not transient: the message asks for fes serve's address."""
    with (
        Application(domain.source, store=leader_url) as leader,
        served(leader.store) as url,
        pytest.raises(StoreUnavailable, match="not a log fes serve serves") as error,
    ):
        open_database(f"{url}/somewhere/else", token=TOKEN).store("source")
    assert not error.value.transient


# --- the store's protocol, read-only ------------------------------------------------------


def test_the_http_store_is_read_only_and_serves_only_the_log(leader_url: str) -> None:
    """Writes raise StoreError naming a read-only HTTP leader; what is not served says so."""
    with Application(domain.source, store=leader_url) as leader, served(leader.store) as url:
        send(leader, range(2))
        http = open_database(url, token=TOKEN)
        store = http.store("source")
        assert isinstance(http, HttpDatabase) and isinstance(store, HttpStore)
        assert isinstance(store, Store)
        with pytest.raises(StoreError, match="read-only HTTP leader"):
            store.append([])
        with pytest.raises(StoreError, match="read-only HTTP leader"):
            store.reseal([])
        with pytest.raises(StoreError, match="read-only HTTP leader: delete_snapshots"):
            store.delete_snapshots(keep=[])
        with pytest.raises(StoreError, match="only its notification log"):
            store.read_stream("m-1")
        # in words first: an application's get() never called read_payloads itself
        with pytest.raises(
            StoreError, match=r"reading a stream's events \(read_payloads\) is not available"
        ):
            store.read_payloads("m-1")
        with pytest.raises(StoreError, match=r"streams' versions \(stream_versions\)"):
            store.stream_versions(["m-1"])
        assert store.tracked() == {} and store.last_tracked("x") == 0
        assert store.load_snapshot("m-1") is None and store.load_view("v") is None
        with pytest.raises(ConfigurationError, match="serves application 'source', not 'sink'"):
            http.store("sink")
        with pytest.raises(StoreError, match="limit must be an integer"):
            store.read_log(0, limit=-1)
        # the protocol's range, as every store reads it: the server takes no
        # negative after, so the store asks from 0, the same events
        assert [e.position for e in store.read_log(-5)] == [e.position for e in store.read_log()]
        assert len(store.read_log(-5)) == 2 and store.read_log(-5, to=-1) == []
        http.close()
        http.close()
        with pytest.raises(StoreError, match="is closed"):
            store.read_log(0)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://user:secret@host/fes", "holds no user or password"),
        ("https://host/fes?token=abc", "no place for a secret"),
        ("https://host/fes?timeout=x", "option timeout='x'"),
        ("http:///fes", "names no host"),
        ("http://host:99999/fes", "port '99999'"),
        ("https:host", "must be followed by //"),
    ],
)
def test_a_bad_http_url_is_refused_without_its_secret(url: str, said: str) -> None:
    """Credentials and tokens have no place in the URL; the message masks them."""
    with pytest.raises(StoreURLError, match=said) as refused:
        open_database(url)
    assert "secret" not in str(refused.value).replace("a secret", "")
    assert "abc" not in str(refused.value)


def test_a_missing_httpx_is_a_configuration_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without httpx, an http:// URL asks for the http extra."""
    monkeypatch.setitem(sys.modules, "httpx", None)
    monkeypatch.delitem(sys.modules, "fes.edge.stores._http", raising=False)
    monkeypatch.delitem(sys.modules, "fes.edge.stores._http._database", raising=False)
    with pytest.raises(ConfigurationError, match=r"fes-events\[http\]"):
        open_database("http://127.0.0.1:1/fes")


# --- waiting ---------------------------------------------------------------------------------


def test_a_wait_after_the_last_position_returns_after_its_timeout(leader_url: str) -> None:
    """wait() and /log?wait= return no later than asked (and the server's cap) when idle."""
    with Application(domain.source, store=leader_url) as leader:
        send(leader, range(3))
        with served(leader.store, max_wait=0.4) as url, open_database(url, token=TOKEN) as http:
            store = http.store("source")
            began = time.monotonic()
            assert store.wait(3, 0.3) is False
            # its timeout, plus a round trip (generous: CI machines are busy)
            assert 0.25 <= time.monotonic() - began < 3.0
            began = time.monotonic()
            answer = httpx.get(f"{url}/log?after=3&wait=60",
                               headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
            took = time.monotonic() - began
            assert answer.json()["rows"] == [] and 0.35 <= took < 4.0, took  # the cap, not 60 s
            assert store.wait(2, 5) is True


def test_a_long_poll_wakes_when_the_leader_appends(leader_url: str) -> None:
    """A waiting follower learns of a new event long before its timeout."""
    with Application(domain.source, store=leader_url) as leader:
        send(leader, range(1))
        with served(leader.store) as url, open_database(url, token=TOKEN) as http:
            store = http.store("source")
            timer = threading.Timer(0.3, send, (leader, [99]))
            timer.start()
            began = time.monotonic()
            assert store.wait(1, 20) is True
            assert time.monotonic() - began < 5
            timer.join()
            assert [r.position for r in store.read_log(1)] == [2]


def test_the_read_after_a_long_poll_takes_the_rows_it_brought(leader_url: str) -> None:
    """A wake-up is one request: the read after wait() is answered from its page."""
    with Application(domain.source, store=leader_url) as leader:
        send(leader, range(3))
        with served(leader.store, max_limit=2) as url:
            http = open_database(url, token=TOKEN, retries=0)
            store = http.store("source")
            assert store.wait(0, 5) is True  # brings back a full page, 1 and 2
            assert store.read_log(0) == leader.store.read_log(0)  # and reads on for 3
            assert store.wait(1, 5) is True
    # the server is gone: only what the poll brought can answer
    assert [r.position for r in store.read_log(1, limit=1)] == [2]
    with pytest.raises(StoreUnavailable):
        store.read_log(1)  # taken once: asked again, it goes to the server
    http.close()


def test_reads_are_monotonic_whatever_the_client_remembers(leader_url: str) -> None:
    """A read never answers nothing past a position the client has seen."""
    with Application(domain.source, store=leader_url) as leader:
        send(leader, range(3))
        with served(leader.store) as url, open_database(url, token=TOKEN) as http:
            store = http.store("source")
            assert len(store.read_log(0)) == 3
            assert store.read_log(3) == []
            send(leader, [3])
            assert store.last_position() == 4
            assert [r.position for r in store.read_log(3)] == [4]


# --- errors ------------------------------------------------------------------------------------


def test_an_unreachable_server_is_store_unavailable_fast() -> None:
    """Nothing listening: the store still opens, and its first read fails transiently."""
    url = f"http://127.0.0.1:{_free_port()}/fes"
    began = time.monotonic()
    with open_database(url, token=TOKEN, retries=2) as http:
        store = http.store("source")
        with pytest.raises(StoreUnavailable, match="cannot be reached") as error:
            store.read_log(0)
    assert error.value.transient
    assert url in str(error.value) and TOKEN not in str(error.value)
    assert time.monotonic() - began < 5


def test_a_wrong_token_is_refused_and_not_transient(leader_url: str) -> None:
    """A 401 is a clear, non-transient error naming the URL and where the token comes from."""
    with Application(domain.source, store=leader_url) as leader, served(leader.store) as url:
        with pytest.raises(StoreUnavailable, match="refused the token given") as wrong:
            open_database(url, token="not-it").store("source")
        assert not wrong.value.transient and url in str(wrong.value)
        assert "not-it" not in str(wrong.value)
        http = open_database(url, env={"SOURCE_FES_HTTP_TOKEN": TOKEN})
        assert http.store("source").last_position() == 0
        with pytest.raises(StoreUnavailable, match=r"no token \(FES_HTTP_TOKEN is unset\)"):
            open_database(url, env={}).apps()
        with pytest.raises(ConfigurationError, match="SOURCE_FES_HTTP_TOKEN") as unfit:
            open_database(url, env={"FES_HTTP_TOKEN": "line\nbreak-secret"}).store("source")
        assert "break-secret" not in str(unfit.value)


def test_a_store_failure_on_the_server_is_a_transient_503(leader_url: str) -> None:
    """The leader's store failing (closed here) reaches the follower as StoreUnavailable."""
    database = open_database(leader_url)
    store = database.store("source")
    with served(store) as url, open_database(url, token=TOKEN, retries=0) as http:
        remote = http.store("source")
        database.close()
        with pytest.raises(StoreUnavailable, match=r"503.*the leader's store failed") as error:
            remote.read_log(0)
        assert error.value.transient


# --- decoding across the wire ---------------------------------------------------------------


def test_a_reader_that_cannot_decrypt_the_leader_is_refused_up_front(leader_url: str) -> None:
    """No cipher, or not the leader's key, for an encrypted leader: ConfigurationError."""
    with Application(domain.source, store=leader_url, cipher=Cipher({"k1": KEY}, "k1"),
                     env={}) as leader:
        send(leader, range(3))
        with served(leader.store) as url:
            with pytest.raises(ConfigurationError, match="SOURCE_FES_CIPHER_KEYS") as refused:
                check_decodable(_reader(url))
            assert "encrypted under key 'k1'" in str(refused.value)
            other = Cipher({"k2": bytes(32)}, "k2")
            with pytest.raises(ConfigurationError, match="does not hold"):
                check_decodable(Application(domain.source, cipher=other,
                                            store=open_database(url, token=TOKEN)))
            keys = Cipher({"k1": KEY}, "k1")
            reader = Application(domain.source, cipher=keys, store=open_database(url, token=TOKEN))
            check_decodable(reader)
            # the check a runner can find without importing httpx for other stores
            assert getattr(leader.store, "check_decodable", None) is None
            with pytest.raises(ConfigurationError, match="no cipher"):
                _reader(url).store.check_decodable(_reader(url))
            assert [r.event for r in reader.log()] == [domain.Sent(n) for n in range(3)]


def test_a_reader_with_a_cipher_of_a_plain_leader_is_refused(leader_url: str) -> None:
    """A codec with a cipher reads only encrypted payloads: refused up front too."""
    with Application(domain.source, store=leader_url, env={}) as leader:
        send(leader, range(1))
        with served(leader.store) as url:
            check_decodable(_reader(url))
            reader = Application(domain.source, cipher=Cipher({"k1": KEY}, "k1"),
                                 store=open_database(url, token=TOKEN))
            with pytest.raises(ConfigurationError,
                               match=r"is not encrypted.*SOURCE_FES_CIPHER_KEYS=none"):
                check_decodable(reader)
    check_decodable(leader)  # not an HTTP store: nothing to check


# --- a follower in another service ---------------------------------------------------------


def _follow(follower: Follower, until: threading.Event, errors: list[BaseException],
            unavailable: list[StoreUnavailable]) -> None:
    """What a runner does for one leader: step, wait, and ride out an unreachable leader."""
    reader = follower.leaders["source"]
    while not until.is_set():
        try:
            if not follower.step("source"):
                reader.store.wait(follower.positions["source"], 0.2)
        except StoreUnavailable as error:
            unavailable.append(error)
            until.wait(0.05)
        except BaseException as error:
            errors.append(error)
            return


def _write(leader: Application, first: int, until: threading.Event, sent: list[int]) -> None:
    """The leader's service at work: five messages every 5 ms until told to stop."""
    while not until.is_set():
        send(leader, range(first, first + 5))
        first += 5
        sent[0] = first
        time.sleep(0.005)


def test_a_follower_resumes_exactly_once_across_a_killed_server(
    leader_url: str, tmp_path: Path
) -> None:
    """fes serve SIGKILLed and restarted mid-stream: no duplicate, no gap."""
    server = ServeProcess(leader_url, "source", _free_port(), _env(FES_SERVE_TOKEN=TOKEN))
    with Application(domain.source, store=leader_url) as leader:
        send(leader, range(5))  # the tables exist before fes serve looks
        server.start()
        sink = Application(domain.sink, store=f"sqlite:///{tmp_path / 'sink.db'}")
        reader = _reader(server.url, retries=1, connect_timeout=1.0)
        follower = Follower(sink, {"source": reader}, batch_size=20)
        stop, errors, unavailable = threading.Event(), [], []  # type: ignore[var-annotated]
        thread = threading.Thread(target=_follow, args=(follower, stop, errors, unavailable))
        enough, sent = threading.Event(), [5]
        writer = threading.Thread(target=_write, args=(leader, 5, enough, sent))
        thread.start()
        writer.start()
        try:
            for threshold in (100, 250, 400):
                deadline = time.monotonic() + 30
                while sink.store.last_tracked("source") < threshold:
                    assert time.monotonic() < deadline and not errors, errors
                    time.sleep(0.005)
                assert writer.is_alive(), "the leader finished first: the kill is not mid-stream"
                server.kill()
                time.sleep(0.3)  # the leader goes on writing while its server is down
                server.start()
            time.sleep(0.2)
            enough.set()
            writer.join(60)
            deadline = time.monotonic() + 60
            while sink.store.last_tracked("source") < leader.store.last_position():
                assert time.monotonic() < deadline and not errors, errors
                time.sleep(0.02)
        finally:
            stop.set()
            thread.join(30)
            enough.set()
            writer.join(30)
            server.stop()
        assert not errors, errors
        assert unavailable, "the follower never found the server gone: nothing was tested"
        assert_exactly_once(sink, leader, expected={f"source:m-{n}@1" for n in range(sent[0])})
        sink.close()


def test_a_refused_token_is_logged_without_the_token(leader_url: str) -> None:
    """fes serve answers 401 and logs the client's address, never the token sent or its own."""
    with Application(domain.source, store=leader_url) as leader:
        send(leader, range(1))
        server = ServeProcess(leader_url, "source", _free_port(),
                              _env(SOURCE_FES_SERVE_TOKEN=TOKEN)).start()
        try:
            answer = httpx.get(f"{server.url}/log", headers={"authorization": "Bearer guess-123"})
            assert answer.status_code == 401
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert httpx.get(f"{server.url}/info").status_code == 401
            good = httpx.get(f"{server.url}/log", headers={"authorization": f"Bearer {TOKEN}"})
            assert len(good.json()["rows"]) == 1
        finally:
            assert server.stop() == 0
    text = "".join(server.lines)
    assert "refused GET /log from 127.0.0.1:" in text and "a wrong bearer token" in text
    assert "refused GET /info from 127.0.0.1:" in text and "no Authorization header" in text
    assert "guess-123" not in text and TOKEN not in text
    assert "fes: stopped" in text


def test_the_log_of_a_refused_token_goes_to_the_fes_serve_logger(
    leader_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning is a record of logger ``fes.serve`` with the client's address."""
    with (
        Application(domain.source, store=leader_url) as leader,
        served(leader.store) as url,
        caplog.at_level(logging.WARNING, logger="fes.serve"),
    ):
        httpx.get(f"{url}/info", headers={"authorization": "Bearer nope-77"})
    records = [r for r in caplog.records if r.name == "fes.serve"]
    assert len(records) == 1 and "127.0.0.1:" in records[0].getMessage()
    assert "nope-77" not in records[0].getMessage()


def test_fes_serve_refuses_to_start_without_a_token(leader_url: str) -> None:
    """No FES_SERVE_TOKEN: exit 1 naming the variable, unless --insecure-no-token."""
    with Application(domain.source, store=leader_url) as leader:
        send(leader, range(1))
    args = [sys.executable, "-m", "fes.edge._cli", "serve", "--store", leader_url,
            "--app", "source", "--port", str(_free_port())]
    done = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "SOURCE_FES_SERVE_TOKEN or FES_SERVE_TOKEN" in done.stderr
    assert "--insecure-no-token" in done.stderr
    other = subprocess.run([*args[:-4], "--app", "nobody"], env=_env(FES_SERVE_TOKEN=TOKEN),
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 1 and "has no application 'nobody'" in other.stderr
    server = ServeProcess(leader_url, "source", _free_port(), _env())
    server.args.append("--insecure-no-token")
    server.start()
    try:
        assert "WITHOUT a token" in "".join(server.lines)
        assert len(httpx.get(f"{server.url}/log").json()["rows"]) == 1
    finally:
        assert server.stop() == 0


def test_a_port_in_use_is_reported_not_served(leader_url: str) -> None:
    """serve() returns False when uvicorn cannot listen, and fes serve exits 1."""
    with socket.socket() as taken, Application(domain.source, store=leader_url) as leader:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve(leader.store, token=TOKEN, port=port, until=threading.Event()) is False
        send(leader, range(1))
        done = subprocess.run(
            [sys.executable, "-m", "fes.edge._cli", "serve", "--store", leader_url, "--app",
             "source", "--port", str(port)],
            env=_env(FES_SERVE_TOKEN=TOKEN), capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 1 and f"could not serve at 127.0.0.1:{port}" in done.stderr


def test_a_log_server_refuses_bad_settings() -> None:
    """An empty token, a limit below 1 or a negative wait are configuration errors."""
    store = open_database("memory://").store("source")
    for token in (" ", "two words", "caf\u00e9", ""):
        with pytest.raises(ConfigurationError, match="printable ASCII") as refused:
            LogServer(store, token=token)
        assert not token.strip() or token not in str(refused.value)
    with pytest.raises(ConfigurationError, match="max_limit"):
        LogServer(store, token=TOKEN, max_limit=0)
    with pytest.raises(ConfigurationError, match="max_wait"):
        LogServer(store, token=TOKEN, max_wait=-1)


def test_a_postgresql_leader_is_served_to_a_follower(pg_url: str) -> None:
    """The same over a PostgreSQL leader: every upstream event has one effect."""
    with Application(domain.source, store=pg_url) as leader:
        send(leader, range(50))
        with served(leader.store, max_limit=16) as url:
            sink = Application(domain.sink, store="memory://")
            follower = Follower(sink, {"source": _reader(url)}, batch_size=20)
            while follower.step("source"):
                pass
            send(leader, range(50, 60))
            assert follower.leaders["source"].store.wait(50, 10)
            while follower.step("source"):
                pass
            assert follower.lag() == {"source": 0}
            assert_exactly_once(sink, leader, expected={f"source:m-{n}@1" for n in range(60)})
