"""The embedded Redis: started once per home, reused, stopped by PID, bound to loopback."""

from __future__ import annotations

from pathlib import Path

import redis

from warehouse.store.local_server import ensure_local_redis, running_local_redis, stop_local_redis


def test_embedded_redis_is_reused_and_stopped(tmp_path: Path) -> None:
    """Two commands share one server; stop ends it; its data survives a restart (RDB snapshot)."""
    first = ensure_local_redis(tmp_path)
    try:
        second = ensure_local_redis(tmp_path)
        assert second.pid == first.pid
        client = redis.Redis.from_url(first.url)
        client.set("k", "v")
        assert client.config_get("bind")["bind"].startswith("127.0.0.1")
        client.close()
    finally:
        assert stop_local_redis(tmp_path)
    assert not first.alive()
    assert running_local_redis(tmp_path) is None
    again = ensure_local_redis(tmp_path)
    try:
        assert again.pid != first.pid
        assert redis.Redis.from_url(again.url).get("k") == b"v"
    finally:
        stop_local_redis(tmp_path)
    assert not stop_local_redis(tmp_path)
