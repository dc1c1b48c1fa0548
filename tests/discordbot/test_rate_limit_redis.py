"""The failed-redeem limit on Redis (CACHE_URL=redis://...), the cache to use when several processes share it.

Needs the Redis server at 127.0.0.1:6379: skipped locally when it is not running, required under CI=true.
"""

import os
import socket
import threading
import uuid

import pytest
from django.core.cache import cache

from discordbot.errors import RedeemRateLimited
from discordbot.services import redeem_rate_limit_check, redeem_rate_limit_record_failure

REDIS_URL = "redis://127.0.0.1:6379/15"


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


if not _redis_up():
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI=true but Redis is not reachable at 127.0.0.1:6379")
    pytest.skip("Redis is not running at 127.0.0.1:6379", allow_module_level=True)


@pytest.fixture
def redis_cache(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": f"test-{uuid.uuid4().hex}",  # isolated from other runs sharing the server
        }
    }
    settings.REDEEM_MAX_FAILURES = 5
    settings.REDEEM_FAILURE_WINDOW_SECONDS = 60
    yield cache
    cache.clear()


def test_failures_counted_from_many_threads_all_count_on_redis(redis_cache):
    member = 4242
    start = threading.Barrier(20)

    def fail_once() -> None:
        start.wait()
        redeem_rate_limit_record_failure(discord_user_id=member)

    threads = [threading.Thread(target=fail_once) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert redis_cache.get(f"discordbot:redeem-failures:{member}") == 20
    with pytest.raises(RedeemRateLimited):
        redeem_rate_limit_check(discord_user_id=member)
    redeem_rate_limit_check(discord_user_id=member + 1)  # the limit is per member


def test_limit_starts_after_the_configured_number_of_failures_on_redis(redis_cache):
    member = 777
    for _ in range(4):
        redeem_rate_limit_record_failure(discord_user_id=member)
        redeem_rate_limit_check(discord_user_id=member)
    redeem_rate_limit_record_failure(discord_user_id=member)
    with pytest.raises(RedeemRateLimited):
        redeem_rate_limit_check(discord_user_id=member)
    # The window expires by itself: the key carries the configured time-to-live.
    import redis

    key = redis_cache.make_key(f"discordbot:redeem-failures:{member}")
    assert 0 < redis.Redis.from_url(REDIS_URL).ttl(key) <= 60
