"""The Lua scripts of the shared write fence (fence.py), each one atomic in Redis.

Every key lives without a TTL (each holds its own expiry, read against Redis's clock), so that
no eviction policy that spares keys without one (`volatile-*`) can take the fence away.
"""

from __future__ import annotations

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
# the holder's value is "<token> <expiry ms>": up while its expiry is ahead. A bare token is
# an earlier gateway's fence (during a rolling upgrade), whose key's own TTL ends it: up.
_HELD = """
local function held(v, now)
  if not v then return false end
  local exp = tonumber(string.match(v, ' (%d+)$'))
  return exp == nil or exp > now
end
"""
# KEYS: holder, writers, epoch. ARGV: member, ttl_ms. -> {1, epoch} registered, {0, ''} fenced
REGISTER = (
    _NOW
    + _HELD
    + """
if held(redis.call('GET', KEYS[1]), now) then return {0, ''} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return {1, redis.call('GET', KEYS[3]) or '0'}
"""
)
# KEYS: writers. ARGV: member, ttl_ms. -> 1 renewed, 0 the registration ran out (or was removed)
RENEW_WRITE = (
    _NOW
    + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) < now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)
# KEYS: writers. ARGV: member -> removed; 1 if it had not run out (it held to the end), else 0
FINISH_WRITE = (
    _NOW
    + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if not score or tonumber(score) < now then return 0 end
return 1
"""
)
# KEYS: writers -> the registrations not run out
PENDING = _NOW + "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) return redis.call('ZCARD', KEYS[1])"
# KEYS: holder, epoch. ARGV: token, lease_ms -> 1 taken (the epoch bumped: a holder that dies
# before its release still makes every replica's next write follow), 0 held by another
ACQUIRE = (
    _NOW
    + _HELD
    + """
if held(redis.call('GET', KEYS[1]), now) then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. (now + tonumber(ARGV[2])))
redis.call('INCR', KEYS[2])
return 1
"""
)
# KEYS: holder. ARGV: token, lease_ms -> 1 renewed, 0 lost (another's, or ran out: writes may
# have registered since)
RENEW_HOLD = (
    _NOW
    + _HELD
    + """
local v = redis.call('GET', KEYS[1])
if not held(v, now) or string.match(v, '^(%S+) ') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. (now + tonumber(ARGV[2])))
return 1
"""
)
# KEYS: holder, epoch. ARGV: token
RELEASE = """
redis.call('INCR', KEYS[2])
local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^(%S+) ') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""
