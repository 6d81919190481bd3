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
local now_text = int_text(now)

local function cancel(id, status, reason)
  local job_key = P .. 'job:' .. id
  redis.call('HSET', job_key, 'updatedAt', now_text, 'lastCancelledAt', now_text,
    'waitUntil', 'null', 'waitTokenId', 'null')
  set_status(id, status, 'cancelled')
  unplace(id)
  -- A cancelled job never runs again: it leaves its prerequisites' dependent sets.
  local deps = redis.call('HMGET', job_key, 'dependsOnJobIds', 'dependsOnTags')
  for _, dep in ipairs(decode_list(deps[1])) do
    redis.call('SREM', P .. 'dep:' .. int_text(dep), id)
  end
  for _, tag in ipairs(decode_list(deps[2])) do
    redis.call('SREM', P .. 'tagdep:' .. tag, id)
  end
  if reason then
    redis.call('HSET', job_key, 'pendingReason', reason)
    add_event(id, 'cancelled', now, reason)
  else
    add_event(id, 'cancelled', now, nil)
  end
end

local cancelled = {}
local seeds = {}
for n = 2, #ARGV do
  local id = ARGV[n]
  local status = redis.call('HGET', P .. 'job:' .. id, 'status')
  if status and allowed[status] then
    cancel(id, status, nil)
    table.insert(cancelled, id)
    table.insert(seeds, tonumber(id))
  end
end

-- Jobs that wait for `id`: by id, or by a tag barrier its tags satisfy.
local function dependents(id)
  local found = redis.call('SMEMBERS', P .. 'dep:' .. id)
  local tags = redis.call('SMEMBERS', P .. 'job:' .. id .. ':tags')
  if #tags == 0 then
    return found
  end
  local has = {}
  for _, tag in ipairs(tags) do
    has[tag] = true
  end
  local candidates = {}
  for _, tag in ipairs(tags) do
    for _, candidate in ipairs(redis.call('SMEMBERS', P .. 'tagdep:' .. tag)) do
      candidates[candidate] = true
    end
  end
  for candidate in pairs(candidates) do
    local wanted = decode_list(redis.call('HGET', P .. 'job:' .. candidate, 'dependsOnTags'))
    local satisfied = #wanted > 0
    for _, tag in ipairs(wanted) do
      if not has[tag] then
        satisfied = false
      end
    end
    if satisfied then
      table.insert(found, candidate)
    end
  end
  return found
end

table.sort(seeds)
local visited = {}
for _, seed in ipairs(seeds) do
  local reason = '{"rootJobId": ' .. int_text(seed) .. ', "dependencyCascade": true}'
  local frontier = {int_text(seed)}
  while #frontier > 0 do
    local next_frontier = {}
    for _, source in ipairs(frontier) do
      for _, id in ipairs(dependents(source)) do
        if not visited[id] and id ~= source then
          local status = redis.call('HGET', P .. 'job:' .. id, 'status')
          if status == 'pending' or status == 'waiting' then
            visited[id] = true
            cancel(id, status, reason)
            table.insert(next_frontier, id)
          end
        end
      end
    end
    frontier = next_frontier
  end
end
return cancelled
