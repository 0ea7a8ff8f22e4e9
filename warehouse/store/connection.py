"""Redis connections of the score store: explicit timeouts, single node or Redis Cluster, outages mapped to
``StoreUnavailableError``.

URL form: ``PRESCORE_REDIS_URL`` stays one URL. A single server is ``redis://[user:pw@]host:port/db`` (or
``rediss://``). A Redis Cluster is the URL of any one of its nodes with the query flag ``cluster=true``, e.g.
``redis://127.0.0.1:7000/0?cluster=true``: the client discovers the other nodes from it (``CLUSTER SLOTS``), the
database must be 0, and the flag is stripped before the URL reaches redis-py (other query options pass through).
``cluster=false`` (or no flag) is a single server. A flag in the URL rather than a second setting keeps every
process that receives the URL (CLI, Dask workers, API, Airflow tasks) on the same store without new plumbing.

``connect`` / ``connect_async`` return ``redis.Redis`` / ``redis.asyncio.Redis`` or, in cluster mode,
``redis.cluster.RedisCluster`` / ``redis.asyncio.cluster.RedisCluster`` with the same socket timeouts and one
immediate retry (a cluster client re-reads the slot map on that retry). The synchronous cluster client reads the
slot map while it is built, so ``connect`` raises ``StoreUnavailableError`` when no node answers; the asyncio one
reads it on its first command.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ClusterDownError, RedisClusterException, SlotNotCoveredError, TryAgainError
from redis.retry import Retry

from warehouse.errors import ConfigError, StoreAuthError, StoreUnavailableError

SyncClient: TypeAlias = redis.Redis | RedisCluster
AsyncClient: TypeAlias = redis.asyncio.Redis | AsyncRedisCluster

# Errors that mean "the store cannot answer now, retry later" (the online reader degrades on these only).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,  # CLUSTERDOWN: slots without a reachable primary
    TryAgainError,  # TRYAGAIN: a slot is moving between nodes
    SlotNotCoveredError,  # the client's slot map has a hole (node lost)
)
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def cluster_url(url: str) -> tuple[str, bool]:
    """``(url without the cluster flag, whether it names a Redis Cluster)``; ``ConfigError`` for a bad flag."""
    parts = urlsplit(url)
    if "cluster" not in parts.query:
        return url, False
    kept, flag = [], None
    for item in parts.query.split("&"):
        name, _, value = item.partition("=")
        if unquote(name) == "cluster":
            flag = unquote(value).strip().lower()
        else:
            kept.append(item)  # other options pass through byte for byte
    if flag is None:
        return url, False
    if flag not in _TRUE + _FALSE:
        raise ConfigError(
            f"PRESCORE_REDIS_URL has cluster={flag!r}: use cluster=true for a Redis Cluster, or drop the flag"
        )
    return urlunsplit(parts._replace(query="&".join(kept))), flag in _TRUE


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"  # never the password


def connect(url: str, *, socket_timeout: float = 5.0, connect_timeout: float = 2.0) -> SyncClient:
    """A client with explicit timeouts and a single immediate reconnect attempt (callers own longer retries):
    ``redis.Redis``, or ``RedisCluster`` for a URL with ``cluster=true``."""
    plain, cluster = cluster_url(url)
    if not cluster:
        return redis.Redis.from_url(
            plain,
            protocol=2,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 1),
        )
    with unavailable(f"connecting to the Redis Cluster at {_where(plain)}"):
        return RedisCluster.from_url(
            plain,
            protocol=2,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 1),
        )


def connect_async(url: str, *, socket_timeout: float = 1.0, connect_timeout: float = 1.0) -> AsyncClient:
    """``connect`` for asyncio: ``redis.asyncio.Redis``, or its ``RedisCluster`` for a URL with ``cluster=true``
    (no I/O until the first command)."""
    plain, cluster = cluster_url(url)
    if not cluster:
        return redis.asyncio.Redis.from_url(
            plain, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
            retry=AsyncRetry(NoBackoff(), 1),
        )  # fmt: skip
    return AsyncRedisCluster.from_url(
        plain, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
        retry=AsyncRetry(NoBackoff(), 1),
    )  # fmt: skip


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is a Redis Cluster client (sync or asyncio)."""
    return isinstance(client, RedisCluster | AsyncRedisCluster)


def cluster_unreachable(exc: BaseException) -> bool:
    """Whether a ``RedisClusterException`` says the cluster (not the caller) is the problem: no node answered
    the slot-map refresh, or the nodes that answered do not cover every slot."""
    return isinstance(exc, RedisClusterException) and (
        isinstance(exc.__cause__, UNAVAILABLE_ERRORS)
        or str(exc).startswith(("Redis Cluster cannot be connected", "All slots are not covered"))
    )


def _untrusted_tls(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = exc
    for _ in range(5):  # redis-py wraps the ssl error once or twice
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def store_error(what: str, exc: BaseException, *, suffix: str = "retry when it answers again") -> StoreUnavailableError:
    """The prescore error for a Redis connection error ``exc`` raised while ``what``:

    - credentials refused (``AUTH`` failed, or a command without it) or a server certificate the configured CA
      does not vouch for → ``StoreAuthError``: fix the URL; retrying will not help;
    - anything else (refused, reset, timed out, cluster slots unserved) → ``StoreUnavailableError`` + ``suffix``.
    """
    if isinstance(exc, redis.AuthenticationError):
        return StoreAuthError(
            f"Redis refused the credentials while {what} ({exc}); fix the user and password in PRESCORE_REDIS_URL "
            "(redis://USER:PASSWORD@HOST:PORT/DB) — retrying will not help"
        )
    tls = _untrusted_tls(exc)
    if tls is not None:
        return StoreAuthError(
            f"the TLS certificate of Redis could not be verified while {what} ({tls.verify_message}); give the CA "
            "that signed it as ssl_ca_certs=/path/ca.pem in PRESCORE_REDIS_URL (rediss://…) — retrying will not help"
        )
    return StoreUnavailableError(f"Redis is unavailable while {what} ({exc}); {suffix}")


@contextmanager
def unavailable(what: str) -> Iterator[None]:
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        raise store_error(what, exc) from exc
    except RedisClusterException as exc:
        if isinstance(exc.__cause__, redis.AuthenticationError) or _untrusted_tls(exc):
            raise store_error(what, exc.__cause__ or exc) from exc
        if not cluster_unreachable(exc):
            raise
        raise store_error(what, exc) from exc


def text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
