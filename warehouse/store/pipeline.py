"""Pipelined bulk commands to Redis or a Redis Cluster: the transport of the score store's loads and counts.

``BulkPipeline.send(keys, encode, what)`` sends one pre-encoded single-key command per key (HSET, RESTORE, HLEN),
``encode`` building the RESP bytes of any subset of them. On one Redis the commands stream over one connection; on a
cluster they are grouped by the node that owns each key's slot and streamed to every node at once, and commands
redirected by a moving slot (MOVED/ASK) are resent after the slot map is refreshed, ``REDIRECT_ATTEMPTS`` times,
then ``StoreUnavailableError``. Replies come back in key order, errors as exception objects (``raise_first_error``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import redis
from redis.exceptions import AskError, ClusterDownError, TryAgainError

from warehouse.errors import StoreUnavailableError
from warehouse.store.connection import SyncClient, unavailable

REDIRECT_ATTEMPTS = 5  # cluster: resends of commands redirected by a moving slot (backoff 0.05 s, doubling)
# encode(None) → every command; encode(positions) → those of keys[k] for k in positions, in that order. Each item is
# (RESP bytes of a chunk of commands, number of commands in it); a generator is consumed as the chunks are sent.
Encoder: TypeAlias = Callable[[list[int] | None], Iterable[tuple[bytes, int]]]


class BulkPipeline:
    """Streams pre-encoded commands over a client's own connection pools (one connection per node at a time)."""

    def __init__(self, client: SyncClient) -> None:
        self.client = client

    def raw(self, streams: list[tuple[Any, Iterable[tuple[bytes, int]]]], what: str) -> list[list[Any]]:
        """Send pre-encoded commands pipelined, one connection per ``(connection pool, chunks)`` stream (one stream
        per node of a cluster, streams in lockstep): the next chunk goes out before the replies of the previous one
        are read. ``chunks`` may be lazy (a generator): each chunk is taken just before it is sent, so encoding the
        next chunk overlaps with Redis executing the previous one. Returns every reply of each stream in order,
        errors as exception objects."""
        out: list[list[Any]] = [[] for _ in streams]
        conns: list[Any] = []
        with unavailable(what):
            try:
                for pool, _ in streams:
                    conns.append(pool.get_connection())
                readers = [Replies(conn) for conn in conns]
                pending = [deque[int]() for _ in streams]
                sources = [iter(chunks) for _, chunks in streams]
                live = list(range(len(streams)))
                while live:
                    for s in list(live):
                        chunk = next(sources[s], None)
                        if chunk is None:
                            live.remove(s)
                            continue
                        wire, count = chunk
                        conns[s].send_packed_command([wire], check_health=False)
                        pending[s].append(count)
                    for s, queue in enumerate(pending):
                        if len(queue) > 1:
                            readers[s](queue.popleft(), out[s])
                for s, queue in enumerate(pending):
                    while queue:
                        readers[s](queue.popleft(), out[s])
            except BaseException:
                for conn in conns:
                    conn.disconnect()  # replies may be left unread: never hand this connection out again as is
                raise
            finally:
                for (pool, _), conn in zip(streams[: len(conns)], conns, strict=True):
                    pool.release(conn)
        return out

    def send(self, keys: list[bytes], encode: Encoder, what: str) -> list[Any]:
        """Replies of one pre-encoded single-key command per key of ``keys``, in order, errors as exception objects.

        ``encode(None)`` encodes every command; ``encode(positions)`` those of ``keys[k]`` for ``k`` in ``positions``,
        in that order. On a cluster each command goes to the node that owns its key's slot, all nodes pipelined at
        once; commands redirected by a moving slot (MOVED/ASK) are resent after the slot map is refreshed.
        """
        if isinstance(self.client, redis.Redis):
            return self.raw([(self.client.connection_pool, encode(None))], what)[0]
        client = self.client
        replies: list[Any] = [None] * len(keys)
        todo = list(range(len(keys)))
        for attempt in range(REDIRECT_ATTEMPTS):
            by_node: dict[str, list[int]] = {}
            pools: dict[str, Any] = {}
            with unavailable(what):
                for k in todo:
                    node = client.get_node_from_key(keys[k])
                    if node.name not in pools:
                        pools[node.name] = client.get_redis_connection(node).connection_pool
                    by_node.setdefault(node.name, []).append(k)
            streams = [(pools[name], encode(positions)) for name, positions in by_node.items()]
            for positions, out in zip(by_node.values(), self.raw(streams, what), strict=True):
                for k, reply in zip(positions, out, strict=True):
                    replies[k] = reply
            down = next((r for r in replies if cluster_refused(r)), None)
            if down is not None:
                raise StoreUnavailableError(
                    f"Redis Cluster is unavailable while {what} ({down}); retry when every slot is served again"
                ) from down
            todo = [k for k in todo if redirected(replies[k])]
            if not todo:
                return replies
            time.sleep(0.05 * 2**attempt)
            with unavailable(what):
                client.nodes_manager.initialize()
        raise StoreUnavailableError(
            f"Redis Cluster kept redirecting {len(todo)} commands while {what} (slots are moving between nodes); "
            "retry when resharding is over"
        )


class Replies:
    """Reads single-line replies (integer, status, error: all that HSET, RESTORE, EXISTS and HLEN answer) of a raw
    pipeline.

    On a RESP2 connection it parses the socket stream itself: redis-py's parser costs ~20 µs a reply, which was the
    largest cost of a bulk load. Other connections go through ``read_response``.
    """

    def __init__(self, conn: Any) -> None:
        self.conn, self.pending, self.lines = conn, b"", list[bytes]()
        self.fast = str(getattr(conn, "protocol", 2)) == "2" and getattr(conn, "_sock", None) is not None

    def __call__(self, count: int, replies: list[Any]) -> None:
        if not self.fast:
            for _ in range(count):
                try:
                    replies.append(self.conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
            return
        while len(self.lines) < count:
            try:
                chunk = self.conn._sock.recv(1 << 16)
            except TimeoutError as exc:
                raise redis.TimeoutError(f"timeout reading replies from Redis: {exc}") from exc
            except OSError as exc:
                raise redis.ConnectionError(f"error reading replies from Redis: {exc}") from exc
            if not chunk:
                raise redis.ConnectionError("Redis closed the connection")
            *done, self.pending = (self.pending + chunk).split(b"\r\n")
            self.lines.extend(done)  # may include replies of the next chunk already
        lines, self.lines = self.lines[:count], self.lines[count:]
        for line in lines:
            kind = line[:1]
            if kind == b":":
                replies.append(int(line[1:]))
            elif kind == b"+":
                replies.append(line[1:])
            elif kind == b"-":
                message = line[1:].decode(errors="replace")
                error = redis.exceptions.OutOfMemoryError if message.startswith("OOM") else redis.ResponseError
                replies.append(error(message))
            else:
                raise redis.ConnectionError(f"unexpected reply {line[:40]!r} on the bulk path")


def redirected(reply: Any) -> bool:
    """A cluster reply saying the key's slot is served by another node (MOVED) or is moving there (ASK)."""
    return isinstance(reply, AskError) or (
        isinstance(reply, redis.ResponseError) and str(reply).startswith(("MOVED ", "ASK "))
    )


def cluster_refused(reply: Any) -> bool:
    """A cluster reply saying the slot has no reachable primary (CLUSTERDOWN) or is busy moving (TRYAGAIN)."""
    return isinstance(reply, ClusterDownError | TryAgainError) or (
        isinstance(reply, redis.ResponseError) and str(reply).startswith(("CLUSTERDOWN", "TRYAGAIN"))
    )


def raise_first_error(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
