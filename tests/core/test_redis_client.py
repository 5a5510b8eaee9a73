"""Opening Redis clients and transports from settings (no server needed)."""

from __future__ import annotations

import fakeredis
import pytest

from runstream.backends.redis_list import Backoff, ListTransport
from runstream.backends.redis_streams import StreamsTransport
from runstream.core.redis_client import connect_redis, masked_url
from runstream.core.settings import load_settings
from runstream.core.transport import Transport, open_transport


async def test_client_uses_the_timeouts_and_pool_size_of_the_settings() -> None:
    settings = load_settings(
        redis_url="redis://127.0.0.1:6390/3", socket_timeout=7.5, block_ms=500, max_connections=9
    )

    client = connect_redis(settings)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6390, 3)
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (7.5, 5.0)
        assert client.connection_pool.max_connections == 9
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:secret@host/1", "redis://user:***@host/1"),
        ("redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/15"),
    ],
)
def test_masked_url_hides_the_password(url: str, shown: str) -> None:
    assert masked_url(url) == shown


@pytest.mark.parametrize(
    ("overrides", "cls", "name"),
    [
        ({"backend": "streams"}, StreamsTransport, "streams"),
        ({"backend": "list", "list_mode": "poll"}, ListTransport, "list-poll"),
        ({"backend": "list", "list_mode": "blocking"}, ListTransport, "list-blocking"),
        ({"backend": "list", "list_mode": "reliable"}, ListTransport, "list-reliable"),
    ],
)
async def test_open_transport_picks_the_backend(
    overrides: dict[str, str], cls: type, name: str
) -> None:
    redis = fakeredis.FakeAsyncRedis()
    transport = open_transport(load_settings(**overrides), redis=redis)

    assert isinstance(transport, cls)
    assert isinstance(transport, Transport)
    assert transport.name == name
    await transport.aclose()
    assert await redis.ping() is True  # a client passed in is not closed by the transport
    await redis.aclose()


def test_backoff_grows_to_its_ceiling_and_resets() -> None:
    backoff = Backoff(0.001, 2.0, 0.005)

    assert [backoff.next() for _ in range(5)] == [0.001, 0.002, 0.004, 0.005, 0.005]
    backoff.reset()
    assert backoff.next() == 0.001
