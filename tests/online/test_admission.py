"""Body-size refusals over real sockets: the app under uvicorn on 127.0.0.1, plain ``http.client`` / sockets.

A client that writes its whole body before it reads must read the 413 (the server drains the rest of the body
before it closes); a body beyond the drain bound, or one that stalls, is cut off: the client's send or read ends
in an answer, an EOF or a reset, never in its own timeout.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest
import uvicorn

from online.app import create_app
from online.settings import OnlineSettings
from tests.online.conftest import FEATURES, MODEL
from warehouse.store.local_server import free_port

LIMIT = 1 << 20  # PRESCORE_MAX_BODY_BYTES (the default)
BATCH = f"/v1/scores/{MODEL}/batch"
CLIENT_TIMEOUT_S = 20.0  # far beyond any drain here: reaching it means the server left the connection open
FEATS = {f: float(i) for i, f in enumerate(FEATURES)}


@contextlib.contextmanager
def live_api(settings: OnlineSettings, http: Literal["auto", "h11", "httptools"] = "auto") -> Iterator[int]:
    """The app served by uvicorn (``http``: its protocol implementation; ``auto`` is the deployed httptools) in a
    thread on a free loopback port, lifespan run; yields the port."""
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=free_port(), http=http,
                            log_level="warning", access_log=False, timeout_graceful_shutdown=5)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield config.port
    finally:
        server.should_exit = True
        thread.join(15)


def batch_body(size: int) -> bytes:
    """A valid-looking batch request of about ``size`` bytes."""
    ids = b'"entity-0001",' * (size // 14)
    return b'{"entity_ids": [' + ids + b'"last"]}'


def post_whole(port: int, body: bytes, *, chunked: bool = False, close: bool = True) -> tuple[int | str, Any]:
    """POST ``body`` to the batch route, written completely before the answer is read: (status, JSON body), or
    (name of the exception, None) when the client got no answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_S)
    headers = {"Content-Type": "application/json", **({"Connection": "close"} if close else {})}
    payload: Any = iter([body[i : i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    try:
        conn.request("POST", BATCH, body=payload, headers=headers)  # chunked: Transfer-Encoding, no Content-Length
        response = conn.getresponse()
        return response.status, (json.loads(response.read()), response.getheader("connection"))
    except OSError as exc:  # BrokenPipeError, ConnectionResetError...
        return type(exc).__name__, None
    finally:
        conn.close()


def assert_clear_413(outcome: tuple[int | str, Any]) -> None:
    status, answer = outcome
    assert status == 413, outcome
    error, connection = answer
    assert error["error"]["code"] == "payload_too_large" and str(LIMIT) in error["error"]["message"]
    assert connection == "close"


def raw_exchange(port: int, head: bytes, chunks: Iterator[bytes]) -> tuple[str, bytes]:
    """Send ``head`` then ``chunks`` on a raw socket until they run out or the server stops taking them, then read
    until EOF. Returns (how it ended: ``eof`` | ``reset``, the bytes read); a client timeout fails the test."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S) as sock:
        received = b""
        try:
            sock.sendall(head)
            for chunk in chunks:
                sock.sendall(chunk)
            while data := sock.recv(65536):
                received += data
        except TimeoutError:
            pytest.fail(f"the server kept the connection open for {CLIENT_TIMEOUT_S} s (read so far: {received!r})")
        except (BrokenPipeError, ConnectionResetError):
            with contextlib.suppress(OSError):  # the answer may still be in the receive buffer
                received += sock.recv(65536)
            return "reset", received
        return "eof", received


@pytest.fixture
def api(make_settings: Callable[..., OnlineSettings]) -> Callable[..., Any]:
    """``api(http="auto", **settings)``: a context manager serving the app with those settings."""
    return lambda http="auto", **overrides: live_api(make_settings(**overrides), http)


@pytest.mark.parametrize("size", [2_000_000, 20_000_000])
@pytest.mark.parametrize("close", [True, False], ids=["connection-close", "keep-alive"])
def test_oversize_body_written_whole_reads_the_413(api, size: int, close: bool):
    """20 times in a row, a client that declares and writes a 2 MB / 20 MB body reads the 413 and its message,
    whether it asked to close the connection (urllib's default) or to keep it; the 413 closes it either way."""
    body = batch_body(size)
    with api() as port:
        outcomes = [post_whole(port, body, close=close) for _ in range(20)]
    for outcome in outcomes:
        assert_clear_413(outcome)


def test_urllib_reads_the_413_of_an_oversize_body(api):
    """``urllib.request`` (``Connection: close``, the whole body written first) gets an HTTPError 413 to read."""
    body, headers = batch_body(2_000_000), {"Content-Type": "application/json"}
    with api() as port:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{BATCH}", data=body, headers=headers)
        for _ in range(10):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT_S)
            assert refused.value.code == 413 and str(LIMIT) in json.loads(refused.value.read())["error"]["message"]


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_chunked_oversize_body_reads_the_413(api, http: str):
    """A chunked body (no Content-Length) that grows past the limit: 413 once it was read whole, both servers."""
    bodies = [batch_body(2_000_000), batch_body(20_000_000)]
    with api(http=http) as port:
        outcomes = [post_whole(port, body, chunked=True) for body in bodies for _ in range(10)]
    for outcome in outcomes:
        status, answer = outcome
        assert status == 413, outcome
        assert str(LIMIT) in answer[0]["error"]["message"] and answer[1] == "close"


def test_oversize_bodies_under_load_read_413_while_lookups_succeed(api):
    """Four threads send oversize bodies (2 MB / 20 MB, declared or chunked) while four others do ordinary GET and
    POST lookups on kept-alive connections: every oversize request reads its 413, every lookup is a 200."""
    oversize: list[tuple[int | str, Any]] = []
    lookups: list[int | str] = []
    bodies = [batch_body(2_000_000), batch_body(20_000_000)]

    def send_oversize(port: int, worker: int) -> None:
        for i in range(8):
            oversize.append(post_whole(port, bodies[(worker + i) % 2], chunked=worker % 2 == 1))

    def look_up(port: int, worker: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_S)
        small = json.dumps({"entity_id": f"e{worker}", "features": FEATS}).encode()
        try:
            for i in range(40):
                if i % 2:
                    conn.request(
                        "POST", f"/v1/scores/{MODEL}", body=small, headers={"Content-Type": "application/json"}
                    )
                else:
                    conn.request("GET", f"/v1/scores/{MODEL}/e{worker}-{i}")
                response = conn.getresponse()
                lookups.append(response.status if "score" in json.loads(response.read()) else "no score")
        except OSError as exc:
            lookups.append(type(exc).__name__)
        finally:
            conn.close()

    with api() as port:
        threads = [threading.Thread(target=send_oversize, args=(port, w)) for w in range(4)]
        threads += [threading.Thread(target=look_up, args=(port, w)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(oversize) == 32 and len(lookups) == 160
    for outcome in oversize:
        assert outcome[0] == 413, outcome
    assert set(lookups) == {200}


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_body_beyond_the_discard_bound_is_cut_off(api, chunked: bool):
    """A 24 MiB body with PRESCORE_MAX_DISCARD_BYTES at 4 MiB: the server stops reading and closes, so the
    client's writing ends (reset, or EOF after the 413) instead of hanging; the server then answers as usual."""
    size, piece = 24 << 20, b"x" * 65536
    if chunked:
        head = f"POST {BATCH} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        chunks = (b"10000\r\n" + piece + b"\r\n" for _ in range(size // len(piece)))
    else:
        head = f"POST {BATCH} HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n".encode()
        chunks = (piece for _ in range(size // len(piece)))
    with api(max_discard_bytes=4 << 20) as port:
        ended, received = raw_exchange(port, head, chunks)
        after = post_whole(port, json.dumps({"entity_ids": ["a"]}).encode(), close=False)
    assert ended in ("reset", "eof")
    assert not received or received.startswith(b"HTTP/1.1 413 ")
    assert after[0] == 200


@pytest.mark.parametrize("http", ["httptools", "h11"])
@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_a_stalled_oversize_body_is_cut_off_after_the_discard_timeout(api, http: str, chunked: bool):
    """A client that sends 2 MiB of an oversize body and then stops: it reads the 413 and then the end of the
    connection (PRESCORE_DISCARD_TIMEOUT_S at 0.5 s), not a connection held open."""
    piece = b"x" * 65536
    if chunked:
        head = f"POST {BATCH} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        chunks = (b"10000\r\n" + piece + b"\r\n" for _ in range(32))
    else:
        head = f"POST {BATCH} HTTP/1.1\r\nHost: t\r\nContent-Length: {8 << 20}\r\n\r\n".encode()
        chunks = (piece for _ in range(32))
    with api(http=http, discard_timeout_s=0.5) as port:
        ended, received = raw_exchange(port, head, chunks)
    assert ended in ("reset", "eof") and received.startswith(b"HTTP/1.1 413 "), (ended, received)
    assert str(LIMIT).encode() in received


def test_expect_100_continue_gets_the_413_without_sending_the_body(api):
    """A client that waits for ``100 Continue`` before its body gets the 413 at once and the connection closes:
    nothing is drained (the body was never sent), and no ``100 Continue`` invites it."""
    head = f"POST {BATCH} HTTP/1.1\r\nHost: t\r\nContent-Length: {2 << 20}\r\nExpect: 100-continue\r\n\r\n"
    with api() as port:
        ended, received = raw_exchange(port, head.encode(), iter(()))
    assert ended == "eof" and received.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in received
