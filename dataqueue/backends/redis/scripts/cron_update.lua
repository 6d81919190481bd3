-- cron_update: change fields of an existing cron schedule and keep its indexes right.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  schedule id
-- ARGV[2..]  field, value, ... of the `P cron:<id>` hash (encoded as cron.py writes them)
--
-- Sets the fields and updatedAt (now). A new status moves the id between the
-- `P cron_status:<status>` sets; a new scheduleName moves `P cron_name:<name>`. The
-- schedule is in `P cron_due` (score nextRunAt) exactly when it is active and has a
-- next run, so pausing removes it and resuming puts it back with its stored nextRunAt.
-- Returns 1; 0 having written nothing when there is no such schedule (no ghost hash,
-- W-R-2); -1 having written nothing when the new name belongs to another schedule.

local id = ARGV[1]
local key = P .. 'cron:' .. id
if redis.call('EXISTS', key) == 0 then
  return 0
end
local old = redis.call('HMGET', key, 'status', 'scheduleName')
for n = 2, #ARGV, 2 do
  if ARGV[n] == 'scheduleName' and ARGV[n + 1] ~= old[2] then
    local owner = redis.call('GET', P .. 'cron_name:' .. ARGV[n + 1])
    if owner and owner ~= id then
      return -1
    end
  end
end

local fields = {'updatedAt', int_text(now_ms())}
for n = 2, #ARGV do
  table.insert(fields, ARGV[n])
end
redis.call('HSET', key, unpack(fields))

local new = redis.call('HMGET', key, 'status', 'scheduleName', 'nextRunAt')
if new[2] ~= old[2] then
  if old[2] and redis.call('GET', P .. 'cron_name:' .. old[2]) == id then
    redis.call('DEL', P .. 'cron_name:' .. old[2])
  end
  redis.call('SET', P .. 'cron_name:' .. new[2], id)
end
if new[1] ~= old[1] then
  if old[1] then
    redis.call('SREM', P .. 'cron_status:' .. old[1], id)
  end
  if new[1] then
    redis.call('SADD', P .. 'cron_status:' .. new[1], id)
  end
end
if new[1] == 'active' and not is_null(new[3]) then
  redis.call('ZADD', P .. 'cron_due', new[3], id)
else
  redis.call('ZREM', P .. 'cron_due', id)
end
return 1
