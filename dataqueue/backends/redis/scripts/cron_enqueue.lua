-- cron_enqueue: enqueue one due occurrence of a cron schedule and advance it, if the
-- schedule is still as the client read it (compare-and-set, W-CRON-1).
--
-- KEYS[1]  key prefix P
-- ARGV[1]  schedule id
-- ARGV[2]  the nextRunAt the client read (hash text), i.e. the occurrence to enqueue
-- ARGV[3]  the following nextRunAt (ms), computed by the client from the clock
--          cron_due.lua returned, or 'null' when the expression never fires again
-- ARGV[4]  the job as a batch row, JSON (20 entries, see add_jobs.lua's header)
-- ARGV[5..]  field, value, ...: the schedule hash fields the client built the job and
--          the next run from (cronExpression, timezone, jobType, payload, ...) as read
--
-- Does nothing and returns -1 unless the schedule still exists, is active, and has
-- that nextRunAt and those field values: another process enqueued this occurrence
-- first, or the schedule was edited, paused or removed after the client read it.
-- Otherwise, all at once: unless allowOverlap is 'true' and lastJobId names a
-- pending, processing or waiting job (a deleted job does not block), insert the job
-- with its `added` event and set lastJobId; in both cases set lastEnqueuedAt and
-- updatedAt to now and nextRunAt to ARGV[3], and re-score `P cron_due` (or leave it
-- when there is no next run). Returns the new job id, or 0 when skipped for overlap.

local id = ARGV[1]
local key = P .. 'cron:' .. id
local f = redis.call('HMGET', key, 'status', 'nextRunAt', 'allowOverlap', 'lastJobId')
if f[1] ~= 'active' or f[2] ~= ARGV[2] then
  return -1
end
for n = 5, #ARGV, 2 do
  if (redis.call('HGET', key, ARGV[n]) or '') ~= ARGV[n + 1] then
    return -1
  end
end

local now = now_ms()
local now_text = int_text(now)
local job_id = 0
local overlapping = false
if f[3] ~= 'true' and not is_null(f[4]) then
  local last_status = redis.call('HGET', P .. 'job:' .. f[4], 'status')
  overlapping = last_status == 'pending' or last_status == 'processing'
    or last_status == 'waiting'
end
if not overlapping then
  job_id = tonumber(insert_job(cjson.decode(ARGV[4]), {}, now))
  redis.call('HSET', key, 'lastJobId', int_text(job_id))
end
redis.call('HSET', key, 'lastEnqueuedAt', now_text, 'updatedAt', now_text, 'nextRunAt', ARGV[3])
if is_null(ARGV[3]) then
  redis.call('ZREM', P .. 'cron_due', id)
else
  redis.call('ZADD', P .. 'cron_due', ARGV[3], id)
end
return job_id
