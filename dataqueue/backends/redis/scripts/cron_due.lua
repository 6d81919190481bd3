-- cron_due: read the due cron schedules (read only; the first step of a cron pass).
--
-- KEYS[1]  key prefix P
-- ARGV     none
--
-- Returns {now ms, hash, hash, ...}: the Redis server's clock, then the HGETALL
-- (flat field, value list) of every active schedule in `P cron_due` whose nextRunAt
-- is at or before now. Order is the sorted set's; the client orders them itself.

local now = now_ms()
local reply = {int_text(now)}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'cron_due', '-inf', int_text(now))) do
  local key = P .. 'cron:' .. id
  if redis.call('HGET', key, 'status') == 'active' then
    table.insert(reply, redis.call('HGETALL', key))
  end
end
return reply
