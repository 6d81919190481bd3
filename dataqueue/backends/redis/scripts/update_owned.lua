-- update_owned: set fields of a job this worker holds (progress, output, step data,
-- lock refresh).
--
-- KEYS[1]  key prefix P
-- ARGV[1]  worker id
-- ARGV[2]  job id
-- ARGV[3]  'prolong' (lockedAt = now and a `prolonged` event) or ''
-- ARGV[4..] field, value pairs
--
-- Only when the job's status is processing and lockedBy = worker; updatedAt = now.
-- Returns 1 if the job changed, else 0.

local worker, id = ARGV[1], ARGV[2]
local job_key = P .. 'job:' .. id
local f = redis.call('HMGET', job_key, 'status', 'lockedBy')
if f[1] ~= 'processing' or f[2] ~= worker then
  return 0
end
local now = now_ms()
local now_text = int_text(now)
local fields = {'updatedAt', now_text}
for k = 4, #ARGV do
  table.insert(fields, ARGV[k])
end
if ARGV[3] == 'prolong' then
  table.insert(fields, 'lockedAt')
  table.insert(fields, now_text)
end
redis.call('HSET', job_key, unpack(fields))
if ARGV[3] == 'prolong' then
  add_event(id, 'prolonged', now, nil)
end
return 1
