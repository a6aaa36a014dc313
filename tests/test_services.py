"""The services `.ci/run` provides to the suite are real and local-only."""

from __future__ import annotations

import redis


def test_redis_is_real_and_bound_to_loopback(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping() is True
        assert client.config_get("bind")["bind"].split() == ["127.0.0.1"]
        client.set("socialalign:test:roundtrip", "往返")
        assert client.get("socialalign:test:roundtrip").decode() == "往返"
    finally:
        client.delete("socialalign:test:roundtrip")
        client.close()
