-- expire_tokens: time out waiting tokens whose timeout has passed, resume their waiters.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  caller id, ARGV[2] call token: a retried call (same token) returns the first
--          call's reply (RedisBackend._run_once), so no timed-out token goes uncounted
-- ARGV[3]  at most this many entries of `P waitpoint_timeout` are examined
--
-- Takes the due entries of `P waitpoint_timeout` (score timeoutAt <= now), earliest
-- first, and removes them. A token still waiting gets status timed_out (completedAt
-- untouched, as on PostgreSQL); every job in `P token_waiters:<id>` (and the token's
-- jobId) whose status is waiting and whose waitTokenId is the token resumes: it stays
-- waiting with waitTokenId cleared and waitUntil = updatedAt = now, and goes to its
-- ready queue (the claim resumes it without consuming an attempt, W-TOK-1, W-TOK-3).
-- `P token_waiters:<id>` is deleted. No job event.
-- Returns {tokens timed out, entries examined}: fewer examined than ARGV[3] means no
-- due entry is left.

-- A reply kept for a retry of the same call: `P call:<caller>` holds
-- '<call token>|<expired>,<examined>' for 60 s (as in add_jobs.lua).
local CALLER, CALL_TOKEN = ARGV[1], call_token()
local previous_reply = call_reply

local kept = previous_reply()
if kept then
  local comma = string.find(kept, ',', 1, true)
  return {tonumber(string.sub(kept, 1, comma - 1)), tonumber(string.sub(kept, comma + 1))}
end
local limit = tonumber(ARGV[3])
local now = now_ms()
local now_text = int_text(now)
local timeouts_key = P .. 'waitpoint_timeout'
local due = redis.call('ZRANGEBYSCORE', timeouts_key, '-inf', now, 'LIMIT', 0, limit)
local expired = 0
for _, token in ipairs(due) do
  redis.call('ZREM', timeouts_key, token)
  local key = P .. 'waitpoint:' .. token
  local f = redis.call('HMGET', key, 'status', 'jobId')
  if f[1] == 'waiting' then
    redis.call('HSET', key, 'status', 'timed_out')
    resume_token_waiters(token, f[2], now_text)
    expired = expired + 1
  end
end
redis.call('SET', P .. 'call:' .. CALLER,
  CALL_TOKEN .. '|' .. int_text(expired) .. ',' .. int_text(#due), 'EX', 60)
return {expired, #due}
