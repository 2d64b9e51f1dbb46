"""Rate limits: a token bucket per caller, in this process or shared by every replica in Redis.

The caller is its API key id, or its client address in open mode (no keys), so an anonymous
client cannot take the whole service either. With ``GGA_REDIS_URL`` set, every replica draws
from the same buckets (a Lua script updates a bucket atomically, on the Redis server's clock),
so N replicas enforce the configured rate, not N times it. If Redis cannot be reached the limit
is not enforced for that request (availability first) and a warning is logged, at most once a
minute.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Protocol

from service.errors import RateLimited

logger = logging.getLogger(__name__)


class RateLimiter(Protocol):
    """What the request path needs of a rate limiter."""

    rate: float

    async def acquire(self, caller: str) -> None:
        """Take one token from ``caller``'s bucket; raises ``RateLimited`` when it is empty."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def _retry_after(tokens: float, rate: float) -> int:
    return max(1, math.ceil((1.0 - tokens) / rate))


class MemoryRateLimiter:
    """A token bucket per caller in this process: ``rate`` requests per second, bursts of ``burst``.

    Args:
        rate: Sustained requests per second per caller; 0 disables the limit.
        burst: Bucket size (requests allowed at once after idling).
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, caller: str) -> None:
        """Take one token from ``caller``'s bucket.

        Raises:
            RateLimited: The bucket is empty; ``Retry-After`` says when a token is back.
        """
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[caller] = (tokens, now)
                raise RateLimited(_retry_after(tokens, self.rate))
            self._buckets[caller] = (tokens - 1.0, now)
            if len(self._buckets) > 100_000:
                self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled completely (they equal a fresh bucket)."""
        refill_s = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill_s}

    async def acquire(self, caller: str) -> None:
        self.take(caller)

    async def close(self) -> None:
        return None


# KEYS[1]: the bucket; ARGV: rate, burst. Returns {allowed (0/1), tokens left as a string}.
# TIME is the Redis server's clock, the same for every replica whatever their clocks say.
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {allowed, tostring(tokens)}
"""


class RedisRateLimiter:
    """Token buckets in Redis, shared by every replica that uses the same server and prefix.

    Args:
        url: ``redis://host:6379/0``.
        rate: Sustained requests per second per caller; 0 disables the limit.
        burst: Bucket size.
        prefix: Key prefix (one per deployment sharing a Redis server).
        timeout_s: Socket timeout; a slower Redis is treated as unreachable.
    """

    def __init__(
        self, url: str, rate: float, burst: int, prefix: str = "gga", timeout_s: float = 0.25
    ) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.rate = rate
        self.burst = max(1, burst)
        self.prefix = prefix
        self._timeout_s = timeout_s
        self._redis_module = aioredis
        # One client per event loop: redis.asyncio connections belong to the loop that made them.
        self._clients: dict[int, tuple[object, object]] = {}
        self._last_warning = -math.inf

    def _client(self) -> tuple[object, object]:
        loop_id = id(asyncio.get_running_loop())
        if loop_id not in self._clients:
            client = self._redis_module.from_url(
                self.url, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s
            )
            self._clients[loop_id] = (client, client.register_script(TOKEN_BUCKET_LUA))
        return self._clients[loop_id]

    def key(self, caller: str) -> str:
        return f"{self.prefix}:ratelimit:{caller}"

    async def acquire(self, caller: str) -> None:
        """Take one token from ``caller``'s shared bucket.

        Raises:
            RateLimited: The bucket is empty.
        """
        if self.rate <= 0:
            return
        _client, script = self._client()
        try:
            allowed, tokens = await script(keys=[self.key(caller)], args=[self.rate, self.burst])
        except Exception as err:  # redis.RedisError, OSError, timeouts: fail open
            now = time.monotonic()
            if now - self._last_warning > 60:
                self._last_warning = now
                logger.warning("rate limit not enforced: Redis at %s failed (%s)", self.url, err)
            return
        if not int(allowed):
            raise RateLimited(_retry_after(float(tokens), self.rate))

    async def close(self) -> None:
        for client, _script in self._clients.values():
            await client.aclose()  # type: ignore[attr-defined]
        self._clients.clear()


def build_rate_limiter(
    rate: float, burst: int, redis_url: str | None, prefix: str = "gga"
) -> MemoryRateLimiter | RedisRateLimiter:
    """The limiter the settings ask for: shared in Redis when a URL is given, else per process."""
    if redis_url:
        return RedisRateLimiter(redis_url, rate, burst, prefix=prefix)
    return MemoryRateLimiter(rate, burst)
