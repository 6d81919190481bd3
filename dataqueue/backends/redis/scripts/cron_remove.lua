-- cron_remove: delete a cron schedule (the jobs it enqueued stay).
--
-- KEYS[1]  key prefix P
-- ARGV[1] caller id, ARGV[2] call token (a retried call returns the first reply), then:
-- ARGV[3]  schedule id
--
-- Deletes `P cron:<id>` and takes the id out of `P cron_name:<name>` (when it still
-- names this schedule), `P crons`, `P cron_status:<status>` and `P cron_due`.
-- Returns 1, or 0 when there is no such schedule.

local kept = call_reply()
if kept then
  return tonumber(kept)
end
local id = args(1)
local key = P .. 'cron:' .. id
local f = redis.call('HMGET', key, 'status', 'scheduleName')
if redis.call('DEL', key) == 0 then
  keep_call_reply('0')
  return 0
end
if f[2] and redis.call('GET', P .. 'cron_name:' .. f[2]) == id then
  redis.call('DEL', P .. 'cron_name:' .. f[2])
end
if f[1] then
  redis.call('SREM', P .. 'cron_status:' .. f[1], id)
end
redis.call('SREM', P .. 'crons', id)
redis.call('ZREM', P .. 'cron_due', id)
keep_call_reply('1')
return 1
