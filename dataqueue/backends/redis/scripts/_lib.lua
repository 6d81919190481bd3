-- Shared helpers, prepended to every script of this folder when it is loaded
-- (dataqueue.backends.redis.scripts.load). KEYS[1] is always the key prefix P;
-- every key a script touches is P .. <name> (see keys.py), built here.
--
-- Where a job is, by status (keys.py has the full layout):
--   pending, due, ready      `P queue:<jobType>` (score -priority, member: 20-digit id)
--   pending, runAt future    `P delayed` (score runAt)
--   failed, retry scheduled  `P retry` (score nextAttemptAt), then `P queue:<type>` when due
--   waiting on a time        `P waiting` (score waitUntil), then `P queue:<type>` when due
--   waiting on a token       no index (the token's completion or expiry makes it due)
--   ready but dependencies unmet: `P blocked` (set) until a prerequisite completes or
--     a tag-barrier job stops being active
--   ready but its group is at the claiming processor's limit: `P group_wait:<group>`
--     (same score/member as the queue) until a job of the group leaves processing
-- Every claim takes from the `P queue:<type>` heads, so claiming never scans jobs
-- that cannot be claimed: those were moved out of the queues when first seen.
local P = KEYS[1]

-- The Redis server's clock in epoch milliseconds (W-R-4: never the client's).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An integer as decimal text, without exponent (Lua's tostring uses %.14g).
local function int_text(n)
  return string.format('%.0f', tonumber(n))
end

-- The NULL encoding of the job hash: missing, '' and 'null' all mean NULL.
local function is_null(value)
  return value == false or value == nil or value == '' or value == 'null'
end

-- Member of a ready set: the id zero-padded to 20 digits, so that equal scores (equal
-- priority) order by id, which is creation order (W-R-1).
local function queue_member(id)
  return string.format('%020d', tonumber(id))
end

-- Appends one event to `P events:<id>`; its id comes from `P event_id_seq`.
-- meta_json is JSON text built by the caller (never re-encoded here) or nil.
local function add_event(id, event_type, now, meta_json)
  local event_id = redis.call('INCR', P .. 'event_id_seq')
  redis.call('RPUSH', P .. 'events:' .. id,
    '{"id":' .. int_text(event_id) .. ',"jobId":' .. int_text(id) .. ',"eventType":"' ..
    event_type .. '","createdAt":' .. int_text(now) .. ',"metadata":' .. (meta_json or 'null') .. '}')
end

-- A JSON text field that may be 'null' or empty, decoded (only for reading ids/tags).
local function decode_list(text)
  if is_null(text) then
    return {}
  end
  local ok, value = pcall(cjson.decode, text)
  if not ok or type(value) ~= 'table' then
    return {}
  end
  return value
end

-- Wake-ups: one PUBLISH per job type per script run on `P wakeup` (payload: the type),
-- received by listening processors (backends/redis/wakeups.py).
local published = {}
local function wake(job_type)
  if not published[job_type] then
    published[job_type] = true
    redis.call('PUBLISH', P .. 'wakeup', job_type)
  end
end

-- Puts a job into its type's ready queue (whatever its status: pending, failed with a
-- due retry, or waiting with a due wait) and wakes processors of that type.
local function make_ready(id)
  local f = redis.call('HMGET', P .. 'job:' .. id, 'jobType', 'priority')
  if not f[1] then
    return
  end
  redis.call('ZADD', P .. 'queue:' .. f[1], 0 - (tonumber(f[2]) or 0), queue_member(id))
  redis.call('SADD', P .. 'queue_types', f[1])
  wake(f[1])
end

-- How many jobs of a group may come back from `P group_wait:<g>` when one leaves
-- processing: one per freed slot; more when none of the group is processing (a
-- processor with a larger limit, or none, may take them).
local GROUP_RETURN_IDLE = 16

-- Moves up to `count` parked jobs of `group` (first in claim order) back to their ready
-- queues; returns how many came back.
local function return_group_waiters(group, count)
  local key = P .. 'group_wait:' .. group
  local members = redis.call('ZRANGE', key, 0, count - 1)
  for _, member in ipairs(members) do
    redis.call('ZREM', key, member)
    make_ready(int_text(member))
  end
  return #members
end

-- A job of `group` left its ready queue without being claimed (cancelled, edited,
-- found not due, blocked or stale). It may be the one a freed slot of its group brought
-- back from `P group_wait:<group>`: pass that slot on to the next parked job, or the
-- parked jobs would wait for the next job of the group to finish, or forever when none
-- runs. Returning one too many costs one look at it: a claim parks it again.
local function pass_group_slot(group)
  if is_null(group) then
    return 0
  end
  return return_group_waiters(group, 1)
end

-- Takes a job out of its ready queue and out of the blocked/group-wait parking places.
local function unqueue(id)
  local f = redis.call('HMGET', P .. 'job:' .. id, 'jobType', 'groupId')
  local was_ready = 0
  if f[1] then
    was_ready = redis.call('ZREM', P .. 'queue:' .. f[1], queue_member(id))
  end
  if not is_null(f[2]) then
    redis.call('ZREM', P .. 'group_wait:' .. f[2], queue_member(id))
  end
  redis.call('SREM', P .. 'blocked', id)
  if was_ready == 1 then
    pass_group_slot(f[2])
  end
end

-- Takes a job out of every ready/time index (queues, delayed, retry, waiting, parking).
local function unplace(id)
  unqueue(id)
  redis.call('ZREM', P .. 'delayed', id)
  redis.call('ZREM', P .. 'retry', id)
  redis.call('ZREM', P .. 'waiting', id)
end

-- Puts a pending job where a claim will find it: its ready queue when run_at is due,
-- else `delayed` (score run_at ms).
local function place_pending(id, run_at, now)
  unplace(id)
  if tonumber(run_at) <= now then
    make_ready(id)
  else
    redis.call('ZADD', P .. 'delayed', run_at, id)
    -- Processors sleep until the earliest due time they know of: tell them.
    wake(redis.call('HGET', P .. 'job:' .. id, 'jobType'))
  end
end

-- True when a job's dependencies allow it to run (as on PostgreSQL, §2.3): every
-- prerequisite that still exists is completed, and no other active (pending,
-- processing, waiting) job has all of its dependsOnTags (`P active_tag:<t>` sets).
-- `known`, when given, holds the job's {dependsOnJobIds, dependsOnTags} fields as read.
local function dependencies_met(id, known)
  local f = known or redis.call('HMGET', P .. 'job:' .. id, 'dependsOnJobIds', 'dependsOnTags')
  if is_null(f[1]) and is_null(f[2]) then
    return true
  end
  for _, dep in ipairs(decode_list(f[1])) do
    local status = redis.call('HGET', P .. 'job:' .. int_text(dep), 'status')
    if status and status ~= 'completed' then
      return false
    end
  end
  local tags = decode_list(f[2])
  if #tags > 0 then
    local keys = {}
    for n, tag in ipairs(tags) do
      keys[n] = P .. 'active_tag:' .. tag
    end
    for _, other in ipairs(redis.call('SINTER', unpack(keys))) do
      if other ~= tostring(id) then
        return false
      end
    end
  end
  return true
end

-- A blocked job whose dependencies may now be met goes back to its ready queue.
local function recheck_blocked(id)
  if redis.call('SISMEMBER', P .. 'blocked', id) == 1 and dependencies_met(id) then
    redis.call('SREM', P .. 'blocked', id)
    make_ready(id)
  end
end

-- Queue statistics (stats.lua reads them; layout and costs: backends/redis/stats.py):
--   `P stats:counts`    hash '<status>:<jobType>' -> jobs, and 'retrying:<jobType>' ->
--                       failed jobs awaiting a retry, of the jobs counted (below)
--   `P stats:retrying`  the counted failed jobs awaiting a retry (ids)
--   `P stats:tracking`  'lo hi': the jobs counted are those with id <= lo or id > hi
--                       ('0 0': all; stats_rebuild.lua counts the others, lo rising to
--                       hi). Absent until the first get_stats: nothing is counted.
--   `P stats:completed:<jobType>`, `P stats:failed:<jobType>`  hash: 'n' -> jobs
--                       completed / attempts failed so far, 'b<second>' -> 'n' before the
--                       first of that epoch second; `P stats:completed_at:<jobType>`,
--                       `P stats:failed_at:<jobType>`: those seconds (zset, score = member)
--                       of the last STATS_KEEP_SECONDS. So the count since a second is
--                       'n' minus 'b' of the first second after it: one lookup.
--   `P stats:runs:<jobType>`  'completedAt:run ms' of its last STATS_RUNS (to 99 more)
--                       completions, newest first
-- Recent activity is recorded whether or not the counts are kept.
local STATS_KEEP_SECONDS = 3600
local STATS_RUNS = 1000

local stats_range = nil  -- read once per script run: false (not counting) or {lo, hi}

local function stats_counted(id)
  if stats_range == nil then
    stats_range = false
    local value = redis.call('GET', P .. 'stats:tracking')
    local lo, hi = string.match(value or '', '^(%d+) (%d+)$')
    if lo then
      stats_range = {tonumber(lo), tonumber(hi)}
    end
  end
  if not stats_range then
    return false
  end
  local n = tonumber(id)
  return n <= stats_range[1] or n > stats_range[2]
end

-- A script that changes many jobs calls stats_defer() first: the statistics' writes are
-- then gathered (one HINCRBY per count and per tally, one LPUSH of run times per type)
-- and made by stats_flush(), which it must call before it returns (advance.lua does,
-- in keep_reply). Other scripts write at once.
local stats_batch = nil

local function stats_defer()
  stats_batch = {counts = {}, tallies = {completed = {}, failed = {}}, runs = {}}
end

local function stats_write_count(field, delta)
  if delta ~= 0 and redis.call('HINCRBY', P .. 'stats:counts', field, delta) == 0 then
    redis.call('HDEL', P .. 'stats:counts', field)
  end
end

local function stats_add(name, job_type, delta)
  local field = name .. ':' .. job_type
  if stats_batch then
    stats_batch.counts[field] = (stats_batch.counts[field] or 0) + delta
  else
    stats_write_count(field, delta)
  end
end

local stats_marked = {}  -- per script run: kind:jobType -> the second last marked

-- `count` more completions or failed attempts (`kind`) of `job_type` at `at_ms`. The
-- first of a second marks it; marks older than STATS_KEEP_SECONDS leave; the keys of
-- the type are given that long (and a minute) to live from its last new second, so an
-- idle type's keys expire.
local function stats_write_tally(kind, job_type, count, at_ms)
  local key = P .. 'stats:' .. kind .. ':' .. job_type
  local n = redis.call('HINCRBY', key, 'n', count)
  local second = math.floor(at_ms / 1000)
  if stats_marked[kind .. ':' .. job_type] == second then
    return
  end
  stats_marked[kind .. ':' .. job_type] = second
  local marks = P .. 'stats:' .. kind .. '_at:' .. job_type
  if redis.call('ZADD', marks, 'NX', second, int_text(second)) == 0 then
    return
  end
  redis.call('HSET', key, 'b' .. int_text(second), n - count)
  local cutoff = second - STATS_KEEP_SECONDS
  for _, old in ipairs(redis.call('ZRANGE', marks, '-inf', cutoff, 'BYSCORE')) do
    redis.call('HDEL', key, 'b' .. old)
    redis.call('ZREM', marks, old)
  end
  for _, name in ipairs({key, marks}) do
    redis.call('EXPIRE', name, STATS_KEEP_SECONDS + 60)
  end
  if kind == 'completed' then
    redis.call('EXPIRE', P .. 'stats:runs:' .. job_type, STATS_KEEP_SECONDS + 60)
  end
end

local function stats_tally(kind, job_type, at_ms)
  if not stats_batch then
    stats_write_tally(kind, job_type, 1, at_ms)
    return
  end
  local of_kind = stats_batch.tallies[kind]
  local pending = of_kind[job_type]
  if pending and pending.at_ms == at_ms then  -- a batch normally shares one time
    pending.count = pending.count + 1
    return
  end
  if pending then
    stats_write_tally(kind, job_type, pending.count, pending.at_ms)
  end
  of_kind[job_type] = {count = 1, at_ms = at_ms}
end

-- Pushes 'completedAt:run ms' entries on the type's list; it keeps the newest
-- STATS_RUNS and is cut back once it has 100 more.
local function stats_write_runs(job_type, entries)
  local runs = P .. 'stats:runs:' .. job_type
  if redis.call('LPUSH', runs, unpack(entries)) >= STATS_RUNS + 100 then
    redis.call('LTRIM', runs, 0, STATS_RUNS - 1)
  end
end

local function stats_run(job_type, done_at, started)
  local entry = string.format('%d:%d', done_at, math.max(0, done_at - started))
  if not stats_batch then
    stats_write_runs(job_type, {entry})
  elseif stats_batch.runs[job_type] then
    table.insert(stats_batch.runs[job_type], entry)
  else
    stats_batch.runs[job_type] = {entry}
  end
end

-- Makes the writes gathered since stats_defer().
local function stats_flush()
  local batch = stats_batch
  if not batch then
    return
  end
  stats_batch = nil
  for field, delta in pairs(batch.counts) do
    stats_write_count(field, delta)
  end
  for job_type, entries in pairs(batch.runs) do
    stats_write_runs(job_type, entries)
  end
  for kind, of_kind in pairs(batch.tallies) do
    for job_type, t in pairs(of_kind) do
      stats_write_tally(kind, job_type, t.count, t.at_ms)
    end
  end
end

-- Statistics of a job that moved from status `old` (nil: new) to `new` (set_status).
-- A completion records its run time (completedAt - startedAt), a failed attempt its
-- time; the counts change for counted jobs only. `known` may hold job_type, and for a
-- completion started_at and completed_at, as the caller read or wrote them.
local function stats_on_status(id, job_key, old, new, known)
  local counted = stats_counted(id)
  local job_type = known and known.job_type
  local retrying
  if new == 'completed' then
    local started, done_at
    if job_type and known.completed_at then
      started, done_at = known.started_at, known.completed_at
    else
      local f = redis.call('HMGET', job_key, 'jobType', 'startedAt', 'completedAt')
      job_type, started, done_at = f[1], f[2], f[3]
    end
    done_at = tonumber(done_at)
    if job_type and done_at then
      if tonumber(started) then
        stats_run(job_type, done_at, tonumber(started))
      end
      stats_tally('completed', job_type, done_at)
    end
  elseif new == 'failed' then
    local f = redis.call('HMGET', job_key, 'jobType', 'lastFailedAt', 'nextAttemptAt',
      'attempts', 'maxAttempts')
    job_type = f[1]
    if job_type and tonumber(f[2]) then
      stats_tally('failed', job_type, tonumber(f[2]))
    end
    retrying = not is_null(f[3]) and (tonumber(f[4]) or 0) < (tonumber(f[5]) or 3)
  elseif counted and not job_type then
    job_type = redis.call('HGET', job_key, 'jobType')
  end
  if not (counted and job_type) then
    return
  end
  if old then
    stats_add(old, job_type, -1)
  end
  stats_add(new, job_type, 1)
  if old == 'failed' and redis.call('SREM', P .. 'stats:retrying', id) == 1 then
    stats_add('retrying', job_type, -1)
  end
  if retrying then
    redis.call('SADD', P .. 'stats:retrying', id)
    stats_add('retrying', job_type, 1)
  end
end

-- A counted job of `status` and `job_type` is deleted (cleanup).
local function stats_on_delete(id, status, job_type)
  if not (stats_counted(id) and status and job_type) then
    return
  end
  stats_add(status, job_type, -1)
  if status == 'failed' and redis.call('SREM', P .. 'stats:retrying', id) == 1 then
    stats_add('retrying', job_type, -1)
  end
end

local ACTIVE = {pending = true, processing = true, waiting = true}

-- Moves a job between statuses (`P status:<s>` sets and the status field) and keeps
-- what depends on the status consistent: the active-tag sets (tag barriers), the
-- processing count per group (`P group:active`, W-GRP-1), and the jobs that wait for
-- this one (blocked dependents are re-checked when it completes or stops being active).
-- `known`, when given, holds fields the caller read: known.group (the groupId field as
-- read) and known.tags (the tags field as read); the status field is then left to the
-- caller's own HSET when known.status_written.
local function set_status(id, old, new, known)
  local job_key = P .. 'job:' .. id
  if old then
    redis.call('SREM', P .. 'status:' .. old, id)
  end
  redis.call('SADD', P .. 'status:' .. new, id)
  if not (known and known.status_written) then
    redis.call('HSET', job_key, 'status', new)
  end
  if old == new then
    return
  end
  stats_on_status(id, job_key, old, new, known)
  local was_active, is_active = ACTIVE[old] or false, ACTIVE[new] or false
  if was_active ~= is_active and not (known and known.tags ~= nil and is_null(known.tags)) then
    local tags = redis.call('SMEMBERS', job_key .. ':tags')
    for _, tag in ipairs(tags) do
      if is_active then
        redis.call('SADD', P .. 'active_tag:' .. tag, id)
      else
        redis.call('SREM', P .. 'active_tag:' .. tag, id)
      end
    end
    if not is_active then
      for _, tag in ipairs(tags) do
        for _, dependent in ipairs(redis.call('SMEMBERS', P .. 'tagdep:' .. tag)) do
          recheck_blocked(dependent)
        end
      end
    end
  end
  if old == 'processing' or new == 'processing' then
    local group
    if known and known.group ~= nil then
      group = known.group
    else
      group = redis.call('HGET', job_key, 'groupId')
    end
    if not is_null(group) then
      if new == 'processing' then
        redis.call('HINCRBY', P .. 'group:active', group, 1)
      else
        local left = redis.call('HINCRBY', P .. 'group:active', group, -1)
        if left <= 0 then
          redis.call('HDEL', P .. 'group:active', group)
          return_group_waiters(group, GROUP_RETURN_IDLE)
        else
          return_group_waiters(group, 1)
        end
      end
    end
  end
  if new == 'completed' then
    for _, dependent in ipairs(redis.call('SMEMBERS', P .. 'dep:' .. id)) do
      recheck_blocked(dependent)
    end
  end
end

-- A job that will never run again (completed or cancelled) leaves the dependent sets
-- of its prerequisites (`P dep:<id>`, `P tagdep:<tag>`).
local function forget_prerequisites(id, known)
  local f = known or redis.call('HMGET', P .. 'job:' .. id, 'dependsOnJobIds', 'dependsOnTags')
  for _, dep in ipairs(decode_list(f[1])) do
    redis.call('SREM', P .. 'dep:' .. int_text(dep), id)
  end
  for _, tag in ipairs(decode_list(f[2])) do
    redis.call('SREM', P .. 'tagdep:' .. tag, id)
  end
end

-- Writes a new pending job and its `added` event. `job` is a batch row (see
-- add_jobs.lua's header) whose dependency ids are final; returns the new id (text).
local function insert_job(job, deps, now)
  local id = redis.call('INCR', P .. 'id_seq')
  local id_text = int_text(id)
  local now_text = int_text(now)
  local deps_json = 'null'
  if #deps > 0 then
    deps_json = '[' .. table.concat(deps, ',') .. ']'
  end
  local run_at = now_text
  if job[5] ~= '' then
    run_at = job[5]
  end
  local key = job[10]
  local key_value = 'null'
  if key ~= '' then
    key_value = key
  end
  local job_key = P .. 'job:' .. id_text
  -- NULL fields are left out (a missing field reads as NULL, upstream's rule too): a
  -- smaller hash is faster to write and stays in Redis's compact encoding.
  local fields = {'id', id_text, 'jobType', job[1], 'payload', job[2], 'status', 'pending',
    'maxAttempts', job[3], 'attempts', '0', 'priority', job[4], 'runAt', run_at,
    'forceKillOnTimeout', job[7], 'createdAt', now_text, 'updatedAt', now_text,
    'errorHistory', '[]', 'stepData', job[21] or '{}'}
  local optional = {'timeoutMs', job[6], 'tags', job[8], 'idempotencyKey', key_value,
    'retryDelay', job[11], 'retryBackoff', job[12], 'retryDelayMax', job[13],
    'deadLetterJobType', job[14], 'groupId', job[15], 'groupTier', job[16],
    'dependsOnJobIds', deps_json, 'dependsOnTags', job[18]}
  for n = 1, #optional, 2 do
    if optional[n + 1] ~= 'null' then
      table.insert(fields, optional[n])
      table.insert(fields, optional[n + 1])
    end
  end
  redis.call('HSET', job_key, unpack(fields))
  redis.call('SADD', P .. 'status:pending', id_text)
  redis.call('SADD', P .. 'type:' .. job[1], id_text)
  if stats_counted(id_text) then
    stats_add('pending', job[1], 1)
  end
  for _, tag in ipairs(job[9]) do
    redis.call('SADD', P .. 'tag:' .. tag, id_text)
    redis.call('SADD', P .. 'active_tag:' .. tag, id_text)
    redis.call('SADD', job_key .. ':tags', tag)
  end
  for _, dep in ipairs(deps) do
    redis.call('SADD', P .. 'dep:' .. dep, id_text)
  end
  for _, tag in ipairs(job[19]) do
    redis.call('SADD', P .. 'tagdep:' .. tag, id_text)
  end
  if key ~= '' then
    redis.call('SET', P .. 'idempotency:' .. key, id_text)
  end
  redis.call('ZADD', P .. 'all', now_text, id_text)
  if tonumber(run_at) <= now then
    make_ready(id_text)
  else
    redis.call('ZADD', P .. 'delayed', run_at, id_text)
    wake(job[1])  -- processors sleep until the earliest due time they know of
  end
  local meta = job[20]
  if #deps > 0 or job[18] ~= 'null' then
    local parts = {}
    if #deps > 0 then
      table.insert(parts, '"jobIds":' .. deps_json)
    end
    if job[18] ~= 'null' then
      table.insert(parts, '"tags":' .. job[18])
    end
    meta = meta .. ',"dependsOn":{' .. table.concat(parts, ',') .. '}'
  end
  add_event(id_text, 'added', now, meta .. '}')
  return id_text
end

-- Cancels one pending or waiting job (status `status`): status cancelled, updatedAt and
-- lastCancelledAt now, wait fields cleared, out of every index, a `cancelled` event.
-- `reason` (JSON text) is the pendingReason and event metadata of a cascade, or nil.
local function cancel_one(id, status, reason, now)
  local job_key = P .. 'job:' .. id
  local now_text = int_text(now)
  redis.call('HSET', job_key, 'updatedAt', now_text, 'lastCancelledAt', now_text,
    'waitUntil', 'null', 'waitTokenId', 'null')
  unplace(id)
  set_status(id, status, 'cancelled')
  forget_prerequisites(id)
  if reason then
    redis.call('HSET', job_key, 'pendingReason', reason)
    add_event(id, 'cancelled', now, reason)
  else
    add_event(id, 'cancelled', now, nil)
  end
end

-- Jobs that wait for `id`: by id (`P dep:<id>`), or by a tag barrier its tags satisfy
-- (`P tagdep:<tag>` of each of its tags, then the candidate's dependsOnTags).
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

-- Cancels, transitively, the pending and waiting dependents of `seeds` (ids of jobs
-- cancelled or failed for good), with pendingReason and event metadata
-- {rootJobId, dependencyCascade: true}; the root is the smallest seed reaching a job.
local function cascade(seeds, now)
  table.sort(seeds, function(a, b) return tonumber(a) < tonumber(b) end)
  local visited = {}
  for _, seed in ipairs(seeds) do
    local reason = '{"rootJobId":' .. int_text(seed) .. ',"dependencyCascade":true}'
    local frontier = {int_text(seed)}
    while #frontier > 0 do
      local next_frontier = {}
      for _, source in ipairs(frontier) do
        for _, id in ipairs(dependents(source)) do
          if not visited[id] and id ~= source then
            local status = redis.call('HGET', P .. 'job:' .. id, 'status')
            if status == 'pending' or status == 'waiting' then
              visited[id] = true
              cancel_one(id, status, reason, now)
              table.insert(next_frontier, id)
            end
          end
        end
      end
      frontier = next_frontier
    end
  end
end

-- Ids ordered newest first (createdAt DESC, then id DESC) from {score, id} pairs in
-- score-descending order, as ZREVRANGE* returns them (equal scores are adjacent but
-- ordered by member text). Each run of equal scores is sorted numerically.
local function newest_first(rows)
  local out = {}
  local i = 1
  while i <= #rows do
    local j = i
    local ids = {}
    while j <= #rows and rows[j][1] == rows[i][1] do
      table.insert(ids, rows[j][2])
      j = j + 1
    end
    table.sort(ids)
    for k = #ids, 1, -1 do
      table.insert(out, ids[k])
    end
    i = j
  end
  return out
end

-- Epoch milliseconds as ISO-8601 UTC text with milliseconds ('2026-11-30T04:45:25.123Z'),
-- the timestamp format of errorHistory entries.
local function iso_ms(ms)
  local seconds = math.floor(ms / 1000)
  local millis = ms - seconds * 1000
  local days = math.floor(seconds / 86400)
  local rest = seconds - days * 86400
  -- Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp + 3
  if mp >= 10 then
    month = mp - 9
  end
  local year = yoe + era * 400
  if month <= 2 then
    year = year + 1
  end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month, day,
    math.floor(rest / 3600), math.floor(rest % 3600 / 60), rest % 60, millis)
end

-- Calls that must act once although a lost reply is retried (RedisBackend._run_once):
-- ARGV[1] is the caller id, ARGV[2] the call token, the script's own arguments follow
-- (args(n) is its n-th). call_reply() is the reply text a first run with this token
-- kept (nil: this is the first run); keep_call_reply(text) keeps it 60 s under
-- `P call:<caller>`.
local function args(n)
  return ARGV[n + 2]
end

-- ARGV[2] is 'f<token>' on a call's first try and 'r<token>' on its retries: a first
-- try cannot have a kept reply, so it skips the read.
local function call_token()
  return string.sub(ARGV[2], 2)
end

local function call_reply()
  if string.sub(ARGV[2], 1, 1) ~= 'r' then
    return nil
  end
  local kept = redis.call('GET', P .. 'call:' .. ARGV[1])
  local token = call_token()
  if kept and string.sub(kept, 1, #token + 1) == token .. '|' then
    return string.sub(kept, #token + 2)
  end
  return nil
end

local function keep_call_reply(text)
  redis.call('SET', P .. 'call:' .. ARGV[1], call_token() .. '|' .. text, 'EX', 60)
end

local function kept_array_reply()
  local kept = call_reply()
  if kept then
    return cjson.decode(kept)
  end
  return nil
end

local function keep_array_reply(reply)
  keep_call_reply(cjson.encode(reply))
end

-- Resumes the jobs waiting on token `token` (its `P token_waiters:<token>` set, and the
-- token's jobId for jobs parked by upstream's Redis backend): each one still waiting on
-- it stays `waiting` with waitTokenId cleared and waitUntil = now, and goes back to its
-- ready queue, so the claim resumes it without using an attempt.
local function resume_token_waiters(token, job_id, now_text)
  local waiters_key = P .. 'token_waiters:' .. token
  local ids = redis.call('SMEMBERS', waiters_key)
  if not is_null(job_id) then
    table.insert(ids, job_id)
  end
  local seen = {}
  for _, id in ipairs(ids) do
    if not seen[id] then
      seen[id] = true
      local job_key = P .. 'job:' .. id
      local f = redis.call('HMGET', job_key, 'status', 'waitTokenId')
      if f[1] == 'waiting' and f[2] == token then
        redis.call('HSET', job_key, 'waitTokenId', 'null', 'waitUntil', now_text,
          'updatedAt', now_text)
        make_ready(id)
      end
    end
  end
  redis.call('DEL', waiters_key)
end

