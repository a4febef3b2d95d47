"""Lua scripts that make the Redis store's read-modify-write steps atomic.

Redis runs a script to completion before serving any other command, so two replicas that
consume the same approval at the same moment are serialised: the first deletes the record
and gets `granted`, the second finds nothing and gets `required`.

Times come from the caller (ARGV, integer microseconds), never from Redis `TIME`, so that
every replica and every test judges with the clock it was given. Integers are formatted with
`%.0f`: Lua's own number-to-string conversion would print large integers in `e` notation.
Key expiry (PEXPIRE) is only garbage collection, set generously after the logical expiry.

CONSUME reads the records of one principal's pending index by name (`prefix .. id`) rather
than through KEYS: fine on a standalone Redis or a primary with replicas, not on Redis
Cluster (which the store does not support: its keys share no hash slot either).
"""

from __future__ import annotations

__all__ = ["APPROVE", "CONSUME", "GC_SLACK_MS", "RATE_HIT"]

#: Keys outlive their logical expiry by this much (clock skew between replicas and Redis).
GC_SLACK_MS = 60_000

# KEYS: record, expiry index, creation index, the principal's pending index.
# ARGV: now_us, approval id, data JSON (the action and its body preview), expires_us, ttl_us,
#       gc_ms, max pending per principal, record key prefix (records of the principal's
#       pending index: `prefix .. id`).
# Returns {'granted', approver} | {'denied', ''} | {'required', ''} | {'limited', retry_us}
#         | {'required', 'created'} (this call created the pending record).
CONSUME = """
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 256)
if #expired > 0 then
  redis.call('ZREM', KEYS[2], unpack(expired))
  redis.call('ZREM', KEYS[3], unpack(expired))
end
local s = redis.call('HMGET', KEYS[1], 'status', 'expires_us', 'decided_by')
if s[1] and tonumber(s[2]) > now then
  if s[1] == 'approved' then
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', KEYS[2], ARGV[2])
    redis.call('ZREM', KEYS[3], ARGV[2])
    redis.call('ZREM', KEYS[4], ARGV[2])
    return {'granted', s[3] or ''}
  elseif s[1] == 'rejected' then
    return {'denied', ''}
  end
  return {'required', ''}
end
local cap = tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[4]) >= cap then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    local p = redis.call('HMGET', ARGV[8] .. id, 'status', 'expires_us')
    if p[1] ~= 'pending' or tonumber(p[2]) <= now then
      redis.call('ZREM', KEYS[4], id)
    end
  end
  if redis.call('ZCARD', KEYS[4]) >= cap then
    local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    return {'limited', string.format('%.0f', tonumber(first[2]) - now)}
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'pending', 'data', ARGV[3], 'expires_us', ARGV[4],
           'ttl_us', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
if redis.call('PTTL', KEYS[4]) < tonumber(ARGV[6]) then
  redis.call('PEXPIRE', KEYS[4], ARGV[6])
end
return {'required', 'created'}
"""

# KEYS: record, index.  ARGV: now_us, approval id, new status, decided_by, gc slack ms.
# Returns {outcome, flat HGETALL of the record (empty when not found)}.
APPROVE = """
local now = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'status', 'expires_us', 'ttl_us')
if not s[1] or tonumber(s[2]) <= now then
  return {'not_found', {}}
end
if s[1] ~= 'pending' then
  return {'not_pending', redis.call('HGETALL', KEYS[1])}
end
local ttl = tonumber(s[3])
local expires = string.format('%.0f', now + ttl)
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'decided_by', ARGV[4], 'decided_us', ARGV[1],
           'expires_us', expires)
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil(ttl / 1000) + tonumber(ARGV[5])))
redis.call('ZADD', KEYS[2], expires, ARGV[2])
return {'done', redis.call('HGETALL', KEYS[1])}
"""

# Sliding-window log. KEYS: window.  ARGV: now_us, period_us, limit, unique member.
# Returns {1, 0} when allowed, {0, retry_after_us} when not.
RATE_HIT = """
local now = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - period))
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil(period / 1000) + 1000))
  return {1, 0}
end
local blocker = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return {0, string.format('%.0f', tonumber(blocker[2]) + period - now)}
"""
