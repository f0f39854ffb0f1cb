"""Concurrency slots and async-queue capacity shared by every process (scale-out).

Each account has a Redis sorted set of the generations holding its slots,
scored by when their lease ends; the waiting async generations form another.
Acquiring is one Lua script (drop expired leases, count, add), so it is atomic
across processes. Leases end by themselves if their holder dies; the workers'
janitor renews the leases of every generation the database says is in progress,
which also restores them after a Redis restart; a short-lived tombstone written
when a slot or queue place is let go keeps a renewal based on a read from just
before from bringing it back.

The embedded default needs none of this: there the slots are the database rows
of the generations in progress, counted in the admission transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

# KEYS[1]: the set; ARGV: member, limit, lease (ms). Returns {granted, active}.
_ACQUIRE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local expires = now_ms + tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], expires, ARGV[1])
  return {1, redis.call('ZCARD', KEYS[1])}
end
local active = redis.call('ZCARD', KEYS[1])
if active >= tonumber(ARGV[2]) then
  return {0, active}
end
redis.call('ZADD', KEYS[1], expires, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, active + 1}
"""

# KEYS: n sets, then n tombstones; ARGV[i]: member for KEYS[i], ARGV[n+1]: lease (ms).
# Re-adds missing members, except those whose tombstone says they were let go.
_RENEW = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local n = #KEYS / 2
local lease = tonumber(ARGV[n + 1])
local renewed = 0
for i = 1, n do
  if redis.call('EXISTS', KEYS[n + i]) == 0 then
    redis.call('ZADD', KEYS[i], now_ms + lease, ARGV[i])
    if redis.call('PTTL', KEYS[i]) < lease then
      redis.call('PEXPIRE', KEYS[i], lease)
    end
    renewed = renewed + 1
  end
end
return renewed
"""


class RedisSlots:
    def __init__(self, redis: Redis, *, prefix: str, lease_seconds: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.lease_ms = int(lease_seconds * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)

    def _account_key(self, account_id: str) -> str:
        return f"{self.prefix}:slots:{account_id}"

    @property
    def _queue_key(self) -> str:
        return f"{self.prefix}:queue"

    async def acquire(self, account_id: str, generation_id: str, *, limit: int) -> tuple[bool, int]:
        """Take one of the account's `limit` slots; returns (granted, active)."""
        granted, active = await self._acquire(
            keys=[self._account_key(account_id)], args=[generation_id, limit, self.lease_ms]
        )
        return bool(granted), int(active)

    async def enqueue(
        self, generation_id: str, *, capacity: int, lease_seconds: float
    ) -> tuple[bool, int]:
        """Take a place in the async queue; returns (granted, waiting)."""
        granted, waiting = await self._acquire(
            keys=[self._queue_key], args=[generation_id, capacity, int(lease_seconds * 1000)]
        )
        return bool(granted), int(waiting)

    def _let_go_key(self, kind: str, generation_id: str) -> str:
        return f"{self.prefix}:{kind}:{generation_id}"

    async def release(self, account_id: str, generation_id: str) -> None:
        """Free the generation's slot and queue place for good: a tombstone (kept a
        lease long) stops a janitor that read it as in progress a moment ago from
        renewing it back."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._let_go_key("released", generation_id), 1, px=self.lease_ms)
            pipe.set(self._let_go_key("dequeued", generation_id), 1, px=self.lease_ms)
            pipe.zrem(self._account_key(account_id), generation_id)
            pipe.zrem(self._queue_key, generation_id)
            await pipe.execute()

    async def dequeue(self, generation_id: str) -> None:
        """The generation left the queue (it started): its place is not renewed again."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._let_go_key("dequeued", generation_id), 1, px=self.lease_ms)
            pipe.zrem(self._queue_key, generation_id)
            await pipe.execute()

    async def renew(
        self,
        holders: Iterable[tuple[str, str]],
        *,
        queued: Iterable[str] = (),
        queue_lease_seconds: float = 3600.0,
    ) -> None:
        """Extend (or restore) the leases of generations known to be in progress:
        (account id, generation id) pairs, and the ids still waiting in the queue."""
        pairs = list(holders)
        if pairs:
            await self._renew(
                keys=[self._account_key(account) for account, _ in pairs]
                + [self._let_go_key("released", generation) for _, generation in pairs],
                args=[generation for _, generation in pairs] + [self.lease_ms],
            )
        waiting = list(queued)
        if waiting:
            await self._renew(
                keys=[self._queue_key] * len(waiting)
                + [self._let_go_key("dequeued", generation) for generation in waiting],
                args=[*waiting, int(queue_lease_seconds * 1000)],
            )

    async def active(self, account_id: str) -> int:
        return int(await self.redis.zcard(self._account_key(account_id)))
