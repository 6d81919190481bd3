-- retry_job: a failed or processing job back to pending, due now, with a `retried` event.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  job id
--
-- Returns 1 if the job changed, 0 otherwise (any other status, or no such job).
-- An exhausted job gets one more attempt (maxAttempts = max(maxAttempts, attempts + 1),
-- W-RT-1), as on PostgreSQL.

local id = ARGV[1]
local job_key = P .. 'job:' .. id
local status = redis.call('HGET', job_key, 'status')
if status ~= 'failed' and status ~= 'processing' then
  return 0
end
local now = now_ms()
local now_text = int_text(now)
local fields = redis.call('HMGET', job_key, 'attempts', 'maxAttempts', 'runAt')
local attempts = tonumber(fields[1]) or 0
local max_attempts = tonumber(fields[2]) or 3
if attempts + 1 > max_attempts then
  max_attempts = attempts + 1
end
redis.call('HSET', job_key, 'updatedAt', now_text, 'lockedAt', 'null', 'lockedBy', 'null',
  'nextAttemptAt', now_text, 'lastRetriedAt', now_text, 'maxAttempts', int_text(max_attempts))
set_status(id, status, 'pending')
place_pending(id, fields[3], now)
add_event(id, 'retried', now, nil)
return 1
