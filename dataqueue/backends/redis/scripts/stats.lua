-- stats: the figures of queue.get_stats(), read from the counters the scripts keep.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  the window in milliseconds
-- ARGV[2]  '1': answer even when the counts do not match the status sets
--
-- Returns {'start'} when the counts are not kept yet, or no longer match the status
-- sets (something wrote them outside these scripts), and {'step'} while
-- stats_rebuild.lua is counting the jobs stored before: the caller runs it and asks
-- again. Otherwise {'ok', now ms, then per job type: jobType, pending, processing,
-- waiting, completed, cancelled, failed, failed awaiting a retry, runAt of the oldest due
-- pending job (or ''), completed in the window, failed attempts in the window}. (The
-- caller reads the run times, `P stats:runs:<type>`, itself: parsing them here would
-- keep Redis busy for no reason.)
--
-- The oldest due pending job of a type is looked for where due jobs wait: the first
-- pending member of each priority level of `P queue:<type>` (ids ascend within a
-- level, so that is its oldest job) and the due entries of `P delayed` that no claim
-- has moved yet (up to DELAYED_LOOKED_AT, earliest first). Jobs parked for unmet
-- dependencies or a group limit are not looked at.
-- Cost: O(types x priority levels x log n), plus the due entries of `P delayed` looked
-- at; nothing scans the jobs.

local DELAYED_LOOKED_AT = 1000
local LEVELS_LOOKED_AT = 16
local MEMBERS_PER_LEVEL = 8
local STATUSES = {'pending', 'processing', 'completed', 'failed', 'cancelled', 'waiting'}

local window = tonumber(ARGV[1])
local tracking = redis.call('GET', P .. 'stats:tracking')
if not tracking then
  return {'start'}
end
if tracking ~= '0 0' then
  return {'step'}
end

-- The counts, by type, and their sums by status against the status sets.
local by_type = {}
local types = {}
local counted = {}
local counts = redis.call('HGETALL', P .. 'stats:counts')
for k = 1, #counts, 2 do
  local name, job_type = string.match(counts[k], '^([^:]*):(.*)$')
  if not by_type[job_type] then
    by_type[job_type] = {}
    table.insert(types, job_type)
  end
  by_type[job_type][name] = tonumber(counts[k + 1])
  counted[name] = (counted[name] or 0) + tonumber(counts[k + 1])
end
local offsets = redis.call('HGETALL', P .. 'stats:offsets')
local offset = {}
for k = 1, #offsets, 2 do
  offset[offsets[k]] = tonumber(offsets[k + 1])
end
for _, status in ipairs(STATUSES) do
  local stored = redis.call('SCARD', P .. 'status:' .. status)
  if stored ~= (counted[status] or 0) + (offset[status] or 0) and ARGV[2] ~= '1' then
    return {'start'}
  end
end
table.sort(types)

local now = now_ms()

-- Due pending jobs no claim has moved to their ready queue yet.
local oldest = {}
local due = redis.call('ZRANGE', P .. 'delayed', '-inf', now, 'BYSCORE', 'LIMIT', 0,
  DELAYED_LOOKED_AT, 'WITHSCORES')
for k = 1, #due, 2 do
  local f = redis.call('HMGET', P .. 'job:' .. due[k], 'status', 'jobType')
  local run_at = tonumber(due[k + 1])
  if f[1] == 'pending' and f[2] and not oldest[f[2]] then
    oldest[f[2]] = run_at  -- ascending: the first one of a type is its earliest
  end
end

-- The first pending job of each priority level of the type's ready queue.
local function oldest_ready(job_type)
  local key = P .. 'queue:' .. job_type
  local best = oldest[job_type]
  local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  local levels = 0
  while #head > 0 and levels < LEVELS_LOOKED_AT do
    levels = levels + 1
    local score = head[2]
    local members = redis.call('ZRANGE', key, score, score, 'BYSCORE', 'LIMIT', 0,
      MEMBERS_PER_LEVEL)
    for _, member in ipairs(members) do
      local f = redis.call('HMGET', P .. 'job:' .. int_text(member), 'status', 'runAt')
      if f[1] == 'pending' then
        local run_at = tonumber(f[2])
        if run_at and run_at <= now and (not best or run_at < best) then
          best = run_at
        end
        break
      end
    end
    head = redis.call('ZRANGE', key, '(' .. score, '+inf', 'BYSCORE', 'LIMIT', 0, 1,
      'WITHSCORES')
  end
  return best
end

-- Completions or failed attempts (`kind`) since the first second of the window (which
-- may be partly in it): the count so far minus the count before the first marked
-- second at or after it.
local first_second = math.floor((now - window) / 1000)
local function since(kind, job_type)
  local key = P .. 'stats:' .. kind .. ':' .. job_type
  local first = redis.call('ZRANGE', P .. 'stats:' .. kind .. '_at:' .. job_type,
    first_second, '+inf', 'BYSCORE', 'LIMIT', 0, 1)
  if #first == 0 then
    return 0
  end
  local f = redis.call('HMGET', key, 'n', 'b' .. first[1])
  return math.max(0, (tonumber(f[1]) or 0) - (tonumber(f[2]) or 0))
end

local reply = {'ok', now}
for _, job_type in ipairs(types) do
  local c = by_type[job_type]
  local oldest_run_at = ''
  if (c.pending or 0) > 0 then
    oldest_run_at = oldest_ready(job_type) or ''
  end
  for _, value in ipairs({job_type, c.pending or 0, c.processing or 0, c.waiting or 0,
      c.completed or 0, c.cancelled or 0, c.failed or 0, c.retrying or 0, oldest_run_at,
      since('completed', job_type), since('failed', job_type)}) do
    table.insert(reply, value)
  end
end
return reply
