-- next_due: milliseconds until the earliest scheduled job becomes due (reads only).
--
-- KEYS[1]  key prefix P
-- ARGV[1]  head: how many future entries of each time index to look at, at most
-- ARGV[2..] the job types to consider (none: every type)
--
-- The time indexes hold job ids of every type, scored by the time the job becomes due:
-- `P delayed` (pending, runAt), `P retry` (failed, nextAttemptAt) and `P waiting`
-- (waits on a time, waitUntil). Only scores after now (the server's clock) count, as on
-- PostgreSQL. Every type: the first future entry of each index. Some types: the first
-- future entry among the head whose job's jobType is one of them; when none of a full
-- head is, the head's last score stands in for that index. That is a lower bound (the
-- processor wakes early, claims nothing and asks again), so the cost stays
-- O(log n + head) however many jobs of other types are scheduled. An index is only
-- read below the earliest time already found. A stale entry (its job changed since)
-- can make the answer early, never late; the claim that finds it due drops it.
--
-- Returns the milliseconds (>= 1) until the earliest time found, or nil when none.

local head = tonumber(ARGV[1])
local wanted = nil
if #ARGV > 1 then
  wanted = {}
  for k = 2, #ARGV do
    wanted[ARGV[k]] = true
  end
end
local now = now_ms()
local earliest = nil

-- The earliest relevant score of index `key` below `earliest`, a lower bound, or nil.
local function earliest_in(key)
  local max = '+inf'
  if earliest then
    max = '(' .. int_text(earliest)
  end
  local count = head
  if not wanted then
    count = 1
  end
  local rows = redis.call('ZRANGEBYSCORE', key, '(' .. int_text(now), max,
    'WITHSCORES', 'LIMIT', 0, count)
  if #rows == 0 then
    return nil
  end
  if not wanted then
    return tonumber(rows[2])
  end
  for r = 1, #rows, 2 do
    local job_type = redis.call('HGET', P .. 'job:' .. rows[r], 'jobType')
    if job_type and wanted[job_type] then
      return tonumber(rows[r + 1])
    end
  end
  if #rows / 2 == count then
    return tonumber(rows[#rows])
  end
  return nil
end

for _, name in ipairs({'delayed', 'retry', 'waiting'}) do
  local found = earliest_in(P .. name)
  if found and (not earliest or found < earliest) then
    earliest = found
  end
end
if not earliest then
  return nil
end
return earliest - now
