"""Per-client rate limits for the storefront's public endpoints, counted in the cache (Redis in production).

A fixed window per client and scope: the first request of a window adds the counter, every request increments
it atomically (`cache.incr`, atomic on Redis and within one process on locmem). The client is the socket's
peer address, or, behind `TRUSTED_PROXY_COUNT` proxies that each append to X-Forwarded-For (an ALB does), the
address the outermost trusted proxy saw. Counters are keyed by a hash, so raw addresses never sit in the cache.
"""

import hashlib
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest


@dataclass(frozen=True)
class Limit:
    requests: int
    seconds: int

    @classmethod
    def parse(cls, text: str) -> "Limit":
        """`"10/60"`: at most 10 requests per 60 seconds. `"0/60"` turns the limit off."""
        requests, _, seconds = text.partition("/")
        return cls(requests=int(requests), seconds=max(1, int(seconds or 60)))


def client_address(request: HttpRequest) -> str:
    proxies = int(getattr(settings, "TRUSTED_PROXY_COUNT", 0))
    if proxies > 0:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR", "")


def rate_limit_exceeded(request: HttpRequest, *, scope: str, limit: Limit) -> int:
    """Count this request; 0 when allowed, else the seconds until the client's window ends (for Retry-After)."""
    if limit.requests <= 0:
        return 0
    now = int(time.time())
    window = now // limit.seconds
    client = hashlib.sha256(f"{settings.SECRET_KEY}:{client_address(request)}".encode()).hexdigest()[:32]
    key = f"ratelimit:{scope}:{client}:{window}"
    cache.add(key, 0, timeout=limit.seconds + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr: this request starts the window
        cache.add(key, 1, timeout=limit.seconds + 1)
        count = 1
    if count <= limit.requests:
        return 0
    return (window + 1) * limit.seconds - now
