-- wait_job: park a job this worker holds until a time or until a token settles.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  caller id, ARGV[2] call token (RedisBackend._run_once): a retried call
--          returns the first run's reply without acting again; the numbers below
--          count from ARGV[3] (args(n) is ARGV[n + 2])
-- args(1)  worker id
-- args(2)  job id
-- args(3)  waitUntil ms, or '' (a token wait without a time)
-- args(4)  token id, or '' (a time wait)
-- args(5)  step data JSON
-- args(6)  `waiting` event metadata JSON (built by the client)
--
-- Only when the job's status is processing and lockedBy = worker: status waiting,
-- waitUntil, waitTokenId, stepData, locks cleared, updatedAt now, a `waiting` event;
-- attempts unchanged. A time wait goes to `P waiting`. A token wait joins
-- `P token_waiters:<token>` (read when the token completes or times out); the token
-- (`P waitpoint:<token>`) gets jobId if it had none (W-TOK-1). If the token has already
-- settled the job is due at once (no lost wake-up, W-TOK-2): this script and the
-- token's completion cannot interleave. Returns 1 if the job changed, else 0.

local kept = call_reply()
if kept then
  return tonumber(kept)
end

local worker, id = args(1), args(2)
local wait_until, token = args(3), args(4)
local job_key = P .. 'job:' .. id
local f = redis.call('HMGET', job_key, 'status', 'lockedBy')
if f[1] ~= 'processing' or f[2] ~= worker then
  return 0
end
local now = now_ms()
local now_text = int_text(now)
local settled = false
if token ~= '' then
  local token_key = P .. 'waitpoint:' .. token
  local t = redis.call('HMGET', token_key, 'status', 'jobId')
  if t[1] and t[1] ~= 'waiting' then
    settled = true
  end
  if t[1] and is_null(t[2]) then
    redis.call('HSET', token_key, 'jobId', id)
  end
end
local until_value, token_value = 'null', 'null'
if settled then
  until_value = now_text
elseif token ~= '' then
  token_value = token
  if wait_until ~= '' then
    until_value = wait_until
  end
else
  until_value = wait_until
end
redis.call('HSET', job_key, 'waitUntil', until_value, 'waitTokenId', token_value,
  'stepData', args(5), 'lockedAt', 'null', 'lockedBy', 'null', 'updatedAt', now_text)
set_status(id, 'processing', 'waiting')
if settled then
  make_ready(id)
elseif token ~= '' then
  redis.call('SADD', P .. 'token_waiters:' .. token, id)
elseif tonumber(until_value) <= now then
  make_ready(id)
else
  redis.call('ZADD', P .. 'waiting', until_value, id)
  wake(redis.call('HGET', job_key, 'jobType'))  -- the earliest due time may have changed
end
add_event(id, 'waiting', now, args(6))
keep_call_reply('1')
return 1
