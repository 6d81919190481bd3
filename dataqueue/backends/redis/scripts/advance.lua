-- advance: complete a worker's finished jobs and claim the next ones, atomically.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  caller id, ARGV[2] call token (RedisBackend._run_once): a retried call
--          returns the first run's reply without acting again; the numbers below
--          count from ARGV[3] (args(n) is ARGV[n + 2])
-- args(1)  worker id
-- args(2)  claim limit (0: complete only)
-- args(3)  group limit (0: none)
-- args(4)  '*' (every job type) or 'types'
-- args(5)  n, the number of job types that follow (with 'types')
-- args(6 .. 5+n)  job types
-- then: r, the number of rate limits, then r triples: job type, limit (most starts per
--       window), window in milliseconds
-- then: m, the number of completions, then m triples: job id, '1'|'0' (output given),
--       output JSON ('' when not given: the stored output is kept)
--
-- Completion (as on PostgreSQL, only of a job this worker holds: status processing and
-- lockedBy = worker): status completed, completedAt/updatedAt now, stepData, waitUntil
-- and waitTokenId cleared, locks kept, a `completed` event; blocked dependents are
-- re-checked.
--
-- Claim: first the due entries of `P delayed`, `P retry` and `P waiting` move to their
-- ready queues (up to PROMOTE each per call, earliest first). Then the heads of the
-- ready queues of the wanted types are merged in claim order (priority DESC, then id,
-- which is creation order) and taken one by one. A head that cannot be claimed leaves
-- the queue for where it belongs, so no later claim looks at it again:
--   no longer pending/failed/waiting  dropped (a stale entry);
--   attempts >= maxAttempts           dropped (stays pending, as on PostgreSQL, until
--                                     retry_job or an edit of maxAttempts);
--   not due (runAt, nextAttemptAt, waitUntil in the future, or a token wait)
--                                     back to delayed/retry/waiting, or nowhere;
--   dependencies unmet                `P blocked`, until a prerequisite completes or a
--                                     tag-barrier job stops being active;
--   group at the limit                `P group_wait:<group>`, until a job of the group
--                                     leaves processing.
-- A job of a group that leaves the queue for any other reason passes a slot on: the next
-- parked job of its group comes back (pass_group_slot in _lib.lua), and the heads are
-- read again so that it is taken in claim order.
-- A claimed job: status processing, lockedAt/updatedAt now, lockedBy worker,
-- pendingReason and waitUntil cleared, startedAt set if unset, attempts + 1 and
-- lastRetriedAt now if it had attempts (not for a job resumed from waiting: a wait is
-- not an attempt), a `processing` event.
--
-- Rate limits: `P rate:<jobType>` (score and member: the claim's time, member
-- '<ms>:<id>') logs the starts of a limited type. Before claiming, entries older than
-- the window are dropped and the rest counted (every entry left counts, even one later
-- than this call's clock); a limited type is claimed only while the count is below its
-- limit, and each job claimed of it adds an entry. The key expires one window after
-- its newest entry. So no window holds more starts than the limit (to the millisecond).
--
-- Returns {c, completed ids (c of them), w, then per claimed job 13 values: id, jobType,
-- payload, attempts, maxAttempts, timeoutMs, forceKillOnTimeout, retryDelay,
-- retryBackoff, retryDelayMax, stepData, groupId, resumed ('1'|'0')}; w is the
-- milliseconds until the first rate-limited type this claim left full has room again
-- (-1: none is full).

local PROMOTE = 1000

-- A retried call (same token) gets the first run's reply, rebuilt from the ids it kept:
-- 'completed ids|claimed id:resumed ...' (the claimed jobs' fields are read again; they
-- are still this worker's).
local CLAIM_FIELDS = {'jobType', 'payload', 'attempts', 'maxAttempts', 'timeoutMs',
  'forceKillOnTimeout', 'retryDelay', 'retryBackoff', 'retryDelayMax', 'stepData', 'groupId'}
local kept = call_reply()
if kept then
  local done_text, claimed_text = string.match(kept, '^([^|]*)|(.*)$')
  local replay = {0}
  for id in string.gmatch(done_text, '[^,]+') do
    table.insert(replay, id)
  end
  replay[1] = #replay - 1
  table.insert(replay, -1)
  for id, resumed in string.gmatch(claimed_text, '(%d+):(%d)') do
    local c = redis.call('HMGET', P .. 'job:' .. id, unpack(CLAIM_FIELDS))
    table.insert(replay, id)
    for n = 1, #c do
      table.insert(replay, c[n])
    end
    table.insert(replay, resumed)
  end
  return replay
end

local worker = args(1)
local limit = tonumber(args(2))
local group_limit = tonumber(args(3))
local all_types = args(4) == '*'
local n_types = tonumber(args(5))
local types = {}
for k = 1, n_types do
  types[k] = args(5 + k)
end
local pos = 6 + n_types
local rates = {}  -- in argument order
local rate_of = {}
for k = 0, tonumber(args(pos)) - 1 do
  local r = {job_type = args(pos + 1 + 3 * k), max = tonumber(args(pos + 2 + 3 * k)),
    per = tonumber(args(pos + 3 + 3 * k)), taken = 0}
  r.key = P .. 'rate:' .. r.job_type
  table.insert(rates, r)
  rate_of[r.job_type] = r
end
pos = pos + 1 + 3 * #rates
local now = now_ms()
local now_text = int_text(now)
stats_defer()  -- statistics written once, by keep_reply(): every return goes through it

-- Completions.
local completed = {}
local m = tonumber(args(pos))
for k = 0, m - 1 do
  local id = args(pos + 1 + 3 * k)
  local job_key = P .. 'job:' .. id
  local f = redis.call('HMGET', job_key, 'status', 'lockedBy', 'groupId', 'tags',
    'dependsOnJobIds', 'dependsOnTags', 'jobType', 'startedAt')
  if f[1] == 'processing' and f[2] == worker then
    local fields = {'status', 'completed', 'updatedAt', now_text, 'completedAt', now_text,
      'stepData', 'null', 'waitUntil', 'null', 'waitTokenId', 'null'}
    if args(pos + 2 + 3 * k) == '1' then
      table.insert(fields, 'output')
      table.insert(fields, args(pos + 3 + 3 * k))
    end
    redis.call('HSET', job_key, unpack(fields))
    set_status(id, 'processing', 'completed', {status_written = true, group = f[3], tags = f[4],
      job_type = f[7], started_at = f[8], completed_at = now})
    if not (is_null(f[5]) and is_null(f[6])) then
      forget_prerequisites(id, {f[5], f[6]})
    end
    add_event(id, 'completed', now, nil)
    table.insert(completed, id)
  end
end

local reply = {#completed}
for _, id in ipairs(completed) do
  table.insert(reply, id)
end
table.insert(reply, -1)
local wait_at = #reply
local claimed_kept = {}
local function keep_reply()
  stats_flush()
  if #completed > 0 or #claimed_kept > 0 then
    keep_call_reply(table.concat(completed, ',') .. '|' .. table.concat(claimed_kept, ','))
  end
end
if limit <= 0 then
  keep_reply()
  return reply
end

-- Promotion of due time-based entries.
local function promote(key)
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, PROMOTE)
  for _, id in ipairs(due) do
    redis.call('ZREM', key, id)
    make_ready(id)
  end
end
promote(P .. 'delayed')
promote(P .. 'retry')
promote(P .. 'waiting')

if all_types then
  types = redis.call('SMEMBERS', P .. 'queue_types')
end

-- Room of each rate-limited type: its limit less the starts left in its window.
for _, r in ipairs(rates) do
  redis.call('ZREMRANGEBYSCORE', r.key, '-inf', '(' .. int_text(now - r.per))
  r.room = r.max - redis.call('ZCARD', r.key)
end

local function log_start(r, id)
  local member = now_text .. ':' .. id
  while redis.call('ZADD', r.key, now, member) == 0 do
    member = member .. '+'  -- the same job claimed twice in one millisecond
  end
  r.room = r.room - 1
  r.taken = r.taken + 1
end

-- What to do with a ready-queue head: 'claim', 'parked' (its group is at the limit) or
-- 'moved' (it left the queue for where it belongs).
local function examine(id, job_key, f)
  local status = f[1]
  if status ~= 'pending' and status ~= 'failed' and status ~= 'waiting' then
    return 'moved'
  end
  if status == 'waiting' then
    if not is_null(f[7]) then
      return 'moved'  -- waiting on a token: its completion makes it due again
    end
    if is_null(f[8]) or tonumber(f[8]) > now then
      if not is_null(f[8]) then
        redis.call('ZADD', P .. 'waiting', f[8], id)
      end
      return 'moved'
    end
  else
    if tonumber(f[2]) >= tonumber(f[3]) then
      return 'moved'
    end
    if tonumber(f[4]) > now then
      if status == 'pending' then
        redis.call('ZADD', P .. 'delayed', f[4], id)
      else
        redis.call('ZADD', P .. 'retry', f[4], id)  -- due again once runAt has passed
      end
      return 'moved'
    end
    if status == 'failed' then
      if is_null(f[5]) then
        return 'moved'  -- failed for good
      end
      if tonumber(f[5]) > now then
        redis.call('ZADD', P .. 'retry', f[5], id)
        return 'moved'
      end
    end
  end
  if not dependencies_met(id, {f[11], f[12]}) then
    redis.call('SADD', P .. 'blocked', id)
    return 'moved'
  end
  if group_limit > 0 and not is_null(f[6]) then
    local active = tonumber(redis.call('HGET', P .. 'group:active', f[6]) or '0')
    if active >= group_limit then
      redis.call('ZADD', P .. 'group_wait:' .. f[6], 0 - (tonumber(f[9]) or 0), queue_member(id))
      return 'parked'
    end
  end
  return 'claim'
end

local function claim(id, job_key, f)
  local status = f[1]
  local resumed = status == 'waiting'
  local attempts = tonumber(f[2])
  local fields = {'lockedAt', now_text, 'lockedBy', worker, 'updatedAt', now_text,
    'pendingReason', 'null', 'waitUntil', 'null'}
  if not resumed then
    if attempts > 0 then
      table.insert(fields, 'lastRetriedAt')
      table.insert(fields, now_text)
    end
    attempts = attempts + 1
    table.insert(fields, 'attempts')
    table.insert(fields, int_text(attempts))
  end
  if is_null(f[10]) then
    table.insert(fields, 'startedAt')
    table.insert(fields, now_text)
  end
  table.insert(fields, 'status')
  table.insert(fields, 'processing')
  redis.call('HSET', job_key, unpack(fields))
  set_status(id, status, 'processing', {status_written = true, group = f[6], tags = f[13],
    job_type = f[14]})
  add_event(id, 'processing', now, nil)
  local resumed_flag = '0'
  if resumed then
    resumed_flag = '1'
  end
  -- f[14..] were read with the head: jobType, payload, timeoutMs, forceKillOnTimeout,
  -- retryDelay, retryBackoff, retryDelayMax, stepData.
  table.insert(claimed_kept, id .. ':' .. resumed_flag)
  for _, value in ipairs({id, f[14], f[15], int_text(attempts), f[3], f[16], f[17], f[18],
      f[19], f[20], f[21], f[6], resumed_flag}) do
    table.insert(reply, value)
  end
end

local claimed = 0
local exhausted_types = {}
while claimed < limit do
  local want = limit - claimed
  local heads = {}
  local last_of_full = {}
  for _, job_type in ipairs(types) do
    local fetch = want
    if rate_of[job_type] then
      fetch = math.min(want, rate_of[job_type].room)
    end
    if fetch <= 0 then
      exhausted_types[job_type] = true  -- no room left in its window
    end
    if not exhausted_types[job_type] then
      local key = P .. 'queue:' .. job_type
      local rows = redis.call('ZRANGE', key, 0, fetch - 1, 'WITHSCORES')
      if #rows == 0 then
        exhausted_types[job_type] = true
        if all_types then
          redis.call('SREM', P .. 'queue_types', job_type)
        end
      else
        for r = 1, #rows, 2 do
          table.insert(heads, {tonumber(rows[r + 1]), rows[r], key})
        end
        if #rows / 2 == fetch then
          last_of_full[rows[#rows - 1]] = true
        end
      end
    end
  end
  if #heads == 0 then
    break
  end
  table.sort(heads, function(a, b)
    if a[1] ~= b[1] then
      return a[1] < b[1]
    end
    return a[2] < b[2]
  end)
  for _, head in ipairs(heads) do
    local member, key = head[2], head[3]
    local id = int_text(member)
    local job_key = P .. 'job:' .. id
    redis.call('ZREM', key, member)
    -- Everything a claim needs, in one read (most heads are claimed).
    local f = redis.call('HMGET', job_key, 'status', 'attempts', 'maxAttempts', 'runAt',
      'nextAttemptAt', 'groupId', 'waitTokenId', 'waitUntil', 'priority', 'startedAt',
      'dependsOnJobIds', 'dependsOnTags', 'tags', 'jobType', 'payload', 'timeoutMs',
      'forceKillOnTimeout', 'retryDelay', 'retryBackoff', 'retryDelayMax', 'stepData')
    local outcome = examine(id, job_key, f)
    local returned = 0
    if outcome == 'claim' then
      claim(id, job_key, f)
      claimed = claimed + 1
      if rate_of[f[14]] then
        log_start(rate_of[f[14]], id)
      end
    elseif outcome == 'moved' then
      returned = pass_group_slot(f[6])
    end
    -- Stop at the limit, and after the last fetched head of a queue that may hold more
    -- (its next entry could come before the other queues' remaining heads), or when a
    -- parked job came back (it may come before them too).
    if returned > 0 then
      -- Its queue may have been found empty already, or (every type) not be listed.
      exhausted_types = {}
      if all_types then
        types = redis.call('SMEMBERS', P .. 'queue_types')
      end
      break
    end
    if claimed >= limit or last_of_full[member] then
      break
    end
  end
end
-- When a type left full has room again: once its limit-th newest start leaves the window.
local wait = -1
for _, r in ipairs(rates) do
  if r.taken > 0 then
    redis.call('PEXPIRE', r.key, r.per + 1)
  end
  if r.room <= 0 then
    local nth = redis.call('ZREVRANGE', r.key, r.max - 1, r.max - 1, 'WITHSCORES')
    if #nth > 0 then
      local ms = tonumber(nth[2]) + r.per + 1 - now
      if wait < 0 or ms < wait then
        wait = ms
      end
    end
  end
end
reply[wait_at] = wait
keep_reply()
return reply
