-- update_owned: set fields of a job this worker holds (progress, output, step data,
-- lock refresh).
--
-- KEYS[1]  key prefix P
-- ARGV[1]  caller id, ARGV[2] call token (RedisBackend._run_once): a retried call
--          returns the first run's reply without acting again; the numbers below
--          count from ARGV[3] (args(n) is ARGV[n + 2])
-- args(1)  worker id
-- args(2)  job id
-- args(3)  'prolong' (lockedAt = now and a `prolonged` event) or ''
-- args(4..) field, value pairs
--
-- Only when the job's status is processing and lockedBy = worker; updatedAt = now.
-- Returns 1 if the job changed, else 0.

local kept = call_reply()
if kept then
  return tonumber(kept)
end

local n_args = #ARGV - 2
local worker, id = args(1), args(2)
local job_key = P .. 'job:' .. id
local f = redis.call('HMGET', job_key, 'status', 'lockedBy')
if f[1] ~= 'processing' or f[2] ~= worker then
  return 0
end
local now = now_ms()
local now_text = int_text(now)
local fields = {'updatedAt', now_text}
for k = 4, n_args do
  table.insert(fields, args(k))
end
if args(3) == 'prolong' then
  table.insert(fields, 'lockedAt')
  table.insert(fields, now_text)
end
redis.call('HSET', job_key, unpack(fields))
if args(3) == 'prolong' then
  add_event(id, 'prolonged', now, nil)
end
keep_call_reply('1')
return 1
