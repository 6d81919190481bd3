-- cancel_jobs: cancel jobs, then (same script) every job that depends on them.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  statuses that may be cancelled, comma-separated ('pending,waiting' or 'pending')
-- ARGV[2..] job ids
--
-- A cancelled job: status cancelled, updatedAt and lastCancelledAt now, wait fields
-- cleared, out of every ready/time index, a `cancelled` event (metadata null).
-- Cascade, as on PostgreSQL: a pending or waiting job that lists a cancelled job in
-- dependsOnJobIds (found through `P dep:<id>`), or whose dependsOnTags are all tags of
-- a cancelled job (found through `P tagdep:<tag>`), is cancelled too, transitively,
-- with pendingReason and event metadata {rootJobId, dependencyCascade: true}; the root
-- is the smallest directly cancelled id that reaches it.
-- A cancelled job leaves the `P dep:<id>`/`P tagdep:<tag>` sets of its prerequisites.
-- Returns the ids cancelled directly (not those of the cascade), in the given order.

local allowed = {}
for status in string.gmatch(ARGV[1], '[^,]+') do
  allowed[status] = true
end
local now = now_ms()

local cancelled = {}
local seeds = {}
for n = 2, #ARGV do
  local id = ARGV[n]
  local status = redis.call('HGET', P .. 'job:' .. id, 'status')
  if status and allowed[status] then
    cancel_one(id, status, nil, now)
    table.insert(cancelled, id)
    table.insert(seeds, id)
  end
end
cascade(seeds, now)
return cancelled
