-- release_jobs: give back claimed jobs that never started, as if never claimed.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  caller id, ARGV[2] call token (RedisBackend._run_once): a retried call
--          returns the first run's reply without acting again; the numbers below
--          count from ARGV[3] (args(n) is ARGV[n + 2])
-- args(1)  worker id
-- then pairs: job id, '1' if it was claimed from waiting (a resumed wait) else '0'
--
-- Only jobs with status processing and lockedBy = worker change. A resumed wait goes
-- back to waiting, due now (attempts unchanged); any other job back to pending with the
-- attempt its claim counted given back (and startedAt cleared if that claim set it).
-- Locks are cleared; no event. Returns the ids released.

local kept = kept_array_reply()
if kept then
  return kept
end
local n_args = #ARGV - 2

local worker = args(1)
local now = now_ms()
local now_text = int_text(now)
local released = {}
for k = 2, n_args, 2 do
  local id, resumed = args(k), args(k + 1) == '1'
  local job_key = P .. 'job:' .. id
  local f = redis.call('HMGET', job_key, 'status', 'lockedBy', 'attempts', 'runAt')
  if f[1] == 'processing' and f[2] == worker then
    redis.call('HSET', job_key, 'lockedAt', 'null', 'lockedBy', 'null', 'updatedAt', now_text)
    if resumed then
      redis.call('HSET', job_key, 'waitUntil', now_text)
      set_status(id, 'processing', 'waiting')
      make_ready(id)
    else
      local attempts = tonumber(f[3]) or 0
      if attempts <= 1 then
        redis.call('HSET', job_key, 'startedAt', 'null')
      end
      if attempts < 1 then
        attempts = 1
      end
      redis.call('HSET', job_key, 'attempts', int_text(attempts - 1))
      set_status(id, 'processing', 'pending')
      place_pending(id, f[4], now)
    end
    table.insert(released, id)
  end
end
if #released > 0 then
  keep_array_reply(released)
end
return released
