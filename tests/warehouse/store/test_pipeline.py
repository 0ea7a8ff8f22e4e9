"""Pipelined bulk commands on a real redis-server: replies in key order over many chunks, error replies as
exception objects in their place, ``raise_first_error``, and an unreachable server as ``StoreUnavailableError``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from warehouse.errors import StoreUnavailableError
from warehouse.store.connection import SyncClient, connect
from warehouse.store.local_server import free_port
from warehouse.store.pipeline import BulkPipeline, Encoder, cluster_refused, raise_first_error, redirected
from warehouse.store.wire import resp


@pytest.fixture
def client(redis_url: str) -> Iterator[SyncClient]:
    conn = connect(redis_url, socket_timeout=2.0)
    yield conn
    conn.close()


def encoder(commands: list[bytes], per_chunk: int) -> Encoder:
    """``encode`` over pre-built single commands: ``per_chunk`` commands a chunk, in the positions asked for."""

    def encode(positions: list[int] | None) -> list[tuple[bytes, int]]:
        picked = [commands[k] for k in (range(len(commands)) if positions is None else positions)]
        return [
            (b"".join(picked[i : i + per_chunk]), len(picked[i : i + per_chunk]))
            for i in range(0, len(picked), per_chunk)
        ]

    return encode


def test_replies_come_back_in_key_order_over_many_chunks(client: SyncClient) -> None:
    """HSET then HLEN per key, sent in many small chunks: every reply is the one of its own key."""
    keys = [f"h:{i}".encode() for i in range(250)]
    fields = [i % 7 + 1 for i in range(len(keys))]
    hsets = [
        resp(b"HSET", k, *[x for f in range(n) for x in (b"f%d" % f, b"v")]) for k, n in zip(keys, fields, strict=True)
    ]
    bulk = BulkPipeline(client)
    assert bulk.send(keys, encoder(hsets, per_chunk=9), "writing test hashes") == fields
    hlens = [resp(b"HLEN", k) for k in keys]
    assert bulk.send(keys, encoder(hlens, per_chunk=4), "counting test hashes") == fields
    assert [client.hlen(k) for k in keys[:5]] == fields[:5]


def test_an_error_reply_stays_in_its_place_and_the_rest_still_apply(client: SyncClient) -> None:
    """A command refused by Redis is a ``ResponseError`` in its position; the commands around it ran, the
    connection stays usable, and ``raise_first_error`` raises the first error."""
    client.set(b"s:1", b"text")  # HSET on a string: WRONGTYPE
    client.set(b"s:3", b"text")
    keys = [b"h:0", b"s:1", b"h:2", b"s:3"]
    commands = [resp(b"HSET", k, b"f", b"v") for k in keys]
    replies = BulkPipeline(client).send(keys, encoder(commands, per_chunk=1), "writing")
    assert replies[0] == 1 and replies[2] == 1
    assert all(isinstance(replies[k], redis.ResponseError) and "WRONGTYPE" in str(replies[k]) for k in (1, 3))
    assert client.hget(b"h:2", b"f") == b"v" and client.ping()
    with pytest.raises(redis.ResponseError, match="WRONGTYPE") as info:
        raise_first_error(replies)
    assert info.value is replies[1]
    raise_first_error([1, 2, b"OK"])  # no error: returns


def test_an_unreachable_server_is_store_unavailable() -> None:
    """No server at the URL: ``send`` raises ``StoreUnavailableError`` naming what it was doing."""
    client = connect(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=1.0)
    try:
        with pytest.raises(StoreUnavailableError, match="while loading run r1 of churn"):
            BulkPipeline(client).send([b"k"], encoder([resp(b"HLEN", b"k")], 1), "loading run r1 of churn")
    finally:
        client.close()


def test_cluster_replies_are_classified() -> None:
    """MOVED/ASK are redirects to resend; CLUSTERDOWN/TRYAGAIN are refusals; an ordinary error is neither."""
    moved, ask = redis.ResponseError("MOVED 3999 127.0.0.1:7001"), redis.ResponseError("ASK 3999 127.0.0.1:7002")
    down, again = redis.ResponseError("CLUSTERDOWN The cluster is down"), redis.ResponseError("TRYAGAIN later")
    wrong = redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    assert [redirected(r) for r in (moved, ask, down, again, wrong, 1)] == [True, True, False, False, False, False]
    assert [cluster_refused(r) for r in (moved, ask, down, again, wrong, 1)] == [False, False, True, True, False, False]
