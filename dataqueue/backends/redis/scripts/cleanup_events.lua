-- cleanup_events: drop old events of the jobs found by one ZSCAN step of `P all`.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  ZSCAN cursor ('0' to start)
-- ARGV[2]  ZSCAN COUNT hint (the batch size)
-- ARGV[3]  days to keep: events whose createdAt is older than now - days are dropped
--
-- Events are appended in time order (server clock), so the old ones are a prefix of
-- each `P events:<id>` list; it is cut with LTRIM inside this script, so events
-- appended concurrently are never lost (W-UB-6). An event whose createdAt cannot be
-- read ends the prefix (kept).
-- Returns {next cursor, number of events deleted}.

local now = now_ms()
local cutoff = now - tonumber(ARGV[3]) * 86400000
local scan = redis.call('ZSCAN', P .. 'all', ARGV[1], 'COUNT', ARGV[2])
local deleted = 0
local chunk = 100
for k = 1, #scan[2], 2 do
  local events_key = P .. 'events:' .. scan[2][k]
  local old = 0
  local done = false
  while not done do
    local entries = redis.call('LRANGE', events_key, old, old + chunk - 1)
    for _, entry in ipairs(entries) do
      local created = tonumber(string.match(entry, '"createdAt":(%d+)'))
      if created and created < cutoff then
        old = old + 1
      else
        done = true
        break
      end
    end
    if #entries < chunk then
      done = true
    end
  end
  if old > 0 then
    if old >= redis.call('LLEN', events_key) then
      redis.call('DEL', events_key)
    else
      redis.call('LTRIM', events_key, old, -1)
    end
    deleted = deleted + old
  end
end
return {scan[1], deleted}
