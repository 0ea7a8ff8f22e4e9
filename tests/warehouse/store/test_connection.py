"""Redis connections of the score store: the URL's cluster flag, ``connect`` against a real redis-server, and the
errors an outage or refused credentials become."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from warehouse.errors import ConfigError, StoreAuthError, StoreUnavailableError
from warehouse.store.connection import cluster_url, connect, store_error, unavailable
from warehouse.store.local_server import RedisProcess, free_port

PASSWORD = "s3cret-pw"


def _raised(url: str) -> redis.RedisError:
    """The error a real client gets on ``PING`` at ``url``."""
    client = connect(url, socket_timeout=2.0, connect_timeout=1.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        return exc
    finally:
        client.close()
    raise AssertionError(f"PING at {url} succeeded")


def test_cluster_url_flag_is_parsed_and_stripped() -> None:
    """``cluster=true`` selects cluster mode and is removed; other options pass through; a bad value is refused."""
    assert cluster_url("redis://h:7000/0") == ("redis://h:7000/0", False)
    assert cluster_url("redis://h:7000/0?cluster=true") == ("redis://h:7000/0", True)
    assert cluster_url("rediss://u:p@h:7000/0?ssl_cert_reqs=none&cluster=Yes") == (
        "rediss://u:p@h:7000/0?ssl_cert_reqs=none",
        True,
    )
    assert cluster_url("redis://h:7000/0?cluster=false&client_name=x") == ("redis://h:7000/0?client_name=x", False)
    with pytest.raises(ConfigError, match="cluster=true"):
        cluster_url("redis://h:7000/0?cluster=maybe")
    single = connect("redis://127.0.0.1:1/0?cluster=false")  # no I/O until the first command
    assert type(single) is redis.Redis
    single.close()


def test_connect_talks_to_a_real_server_with_its_timeouts(redis_url: str) -> None:
    """A single-server URL gives a ``redis.Redis`` with the given timeouts and one retry, on the URL's database."""
    client = connect(redis_url.rsplit("/", 1)[0] + "/3", socket_timeout=1.5, connect_timeout=0.5)
    try:
        assert type(client) is redis.Redis and client.ping()
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"], kwargs["db"]) == (1.5, 0.5, 3)
        assert client.get_retry().get_retries() == 1
        client.set("k", "v")
        assert client.execute_command("CLIENT", "INFO").split(b" db=")[1].startswith(b"3 ")
    finally:
        client.close()


def test_a_server_nobody_runs_is_unavailable_and_says_retry() -> None:
    """Connection refused: ``StoreUnavailableError`` (not an auth error) naming what was being done, and the suffix."""
    exc = _raised(f"redis://127.0.0.1:{free_port()}/0")
    assert isinstance(exc, redis.ConnectionError)
    error = store_error("reading the pointer of churn", exc, suffix="retry in a minute")
    assert type(error) is StoreUnavailableError
    assert str(error).startswith("Redis is unavailable while reading the pointer of churn (")
    assert str(error).endswith("; retry in a minute")
    with pytest.raises(StoreUnavailableError, match="while publishing churn") as info, unavailable("publishing churn"):
        raise exc
    assert not isinstance(info.value, StoreAuthError) and info.value.__cause__ is exc


@pytest.mark.parametrize("password", ["wrong-pw", None])
def test_refused_credentials_are_an_auth_error_that_says_not_to_retry(
    redis_factory: Callable[..., RedisProcess], password: str | None
) -> None:
    """A wrong password, or none, on a server that requires one: ``StoreAuthError`` (a config error) saying how to
    fix the URL, never the password itself."""
    server = redis_factory(password=PASSWORD)
    auth = f":{password}@" if password else ""
    exc = _raised(f"redis://{auth}127.0.0.1:{server.port}/0")
    assert isinstance(exc, redis.AuthenticationError)
    error = store_error("loading run r1", exc)
    assert isinstance(error, StoreAuthError) and isinstance(error, ConfigError)
    message = str(error)
    assert "Redis refused the credentials while loading run r1" in message
    assert "fix the user and password in PRESCORE_REDIS_URL" in message and "retrying will not help" in message
    assert PASSWORD not in message and (password is None or password not in message)
    with pytest.raises(StoreAuthError), unavailable("loading run r1"):
        raise exc
    good = connect(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0")
    try:
        assert good.ping()
    finally:
        good.close()


def test_unavailable_lets_other_errors_through(redis_url: str) -> None:
    """A command error (a bug, not an outage) is not turned into a store error."""
    client = connect(redis_url)
    try:
        client.set("k", "text")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"), unavailable("counting"):
            client.hlen("k")
    finally:
        client.close()
