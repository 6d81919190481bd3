-- cron_add: create a cron schedule; the name check and the insert are one step.
--
-- KEYS[1]  key prefix P
-- ARGV[1] caller id, ARGV[2] call token (a retried call returns the first reply), then:
-- ARGV[3]  the schedule name
-- ARGV[4..]  field, value, ... of the `P cron:<id>` hash (every field but id,
--            createdAt and updatedAt, encoded as in the job hash; cron.py builds them)
--
-- Writes `P cron:<id>` (id from `P cron_id_seq`, createdAt/updatedAt now),
-- `P cron_name:<name>`, `P crons`, `P cron_status:<status>`, and `P cron_due` (score
-- nextRunAt) when the schedule is active and has a next run.
-- Returns the new id, or 0 having written nothing when the name is taken.

local kept = call_reply()
if kept then
  return tonumber(kept)
end
local name_key = P .. 'cron_name:' .. args(1)
if redis.call('EXISTS', name_key) == 1 then
  keep_call_reply('0')
  return 0
end
local id = int_text(redis.call('INCR', P .. 'cron_id_seq'))
local now = int_text(now_ms())
local key = P .. 'cron:' .. id
local fields = {'id', id, 'createdAt', now, 'updatedAt', now}
for n = 4, #ARGV do
  table.insert(fields, ARGV[n])
end
redis.call('HSET', key, unpack(fields))
redis.call('SET', name_key, id)
redis.call('SADD', P .. 'crons', id)
local f = redis.call('HMGET', key, 'status', 'nextRunAt')
redis.call('SADD', P .. 'cron_status:' .. f[1], id)
if f[1] == 'active' and not is_null(f[2]) then
  redis.call('ZADD', P .. 'cron_due', f[2], id)
end
keep_call_reply(id)
return tonumber(id)
