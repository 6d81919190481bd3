-- add_jobs: insert a batch of jobs with one `added` event each, all or nothing.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  JSON array of jobs, each an array of 20 entries (codec.batch_row):
--    1 jobType            2 payload (JSON text)     3 maxAttempts       4 priority
--    5 runAt ms or ''     6 timeoutMs or 'null'     7 forceKillOnTimeout 'true'|'false'
--    8 tags JSON or 'null'   9 tag list             10 idempotencyKey or ''
--   11 retryDelay        12 retryBackoff           13 retryDelayMax    14 deadLetterJobType
--   15 groupId           16 groupTier              17 dependsOn job ids (-k: batch job k-1)
--   18 dependsOnTags JSON or 'null'                19 dependsOn tag list
--   20 `added` metadata JSON without dependsOn and without its closing brace
--   (absent values are the string 'null'; user JSON travels as text, never re-encoded)
--
-- Returns {0, id, ...} (input order) or {1, missing prerequisite id, ...} having
-- written nothing. A job whose idempotency key exists (or repeats an earlier key of
-- the batch) gets that job's id and writes nothing (no second `added` event).
-- Ids are INCR'd in input order, in the script that stamps createdAt.

local jobs = cjson.decode(ARGV[1])
local now = now_ms()

-- Pass 1, read only: resolve keys, check prerequisites.
local kind = {}      -- 'new' | 'existing' | 'dup'
local ref = {}       -- existing id, or index of the first job with the same key
local first_by_key = {}
local missing, missing_seen = {}, {}
for i, job in ipairs(jobs) do
  local key = job[10]
  local unique = true
  if key ~= '' then
    if first_by_key[key] then
      kind[i], ref[i], unique = 'dup', first_by_key[key], false
    else
      first_by_key[key] = i
      local existing = redis.call('GET', P .. 'idempotency:' .. key)
      if existing then
        kind[i], ref[i] = 'existing', existing
      else
        kind[i] = 'new'
      end
    end
  else
    kind[i] = 'new'
  end
  if unique then
    for _, dep in ipairs(job[17]) do
      if dep > 0 and not missing_seen[dep] and redis.call('EXISTS', P .. 'job:' .. int_text(dep)) == 0 then
        missing_seen[dep] = true
        table.insert(missing, dep)
      end
    end
  end
end
if #missing > 0 then
  table.sort(missing)
  local reply = {1}
  for _, dep in ipairs(missing) do
    table.insert(reply, dep)
  end
  return reply
end

-- Pass 2: write.
local ids = {}
local now_text = int_text(now)
for i, job in ipairs(jobs) do
  if kind[i] == 'existing' then
    ids[i] = tonumber(ref[i])
  elseif kind[i] == 'dup' then
    ids[i] = ids[ref[i]]
  else
    local id = redis.call('INCR', P .. 'id_seq')
    ids[i] = id
    local id_text = int_text(id)
    local deps = {}
    for n, dep in ipairs(job[17]) do
      if dep < 0 then
        deps[n] = int_text(ids[-dep])
      else
        deps[n] = int_text(dep)
      end
    end
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
    redis.call('HSET', job_key,
      'id', id_text, 'jobType', job[1], 'payload', job[2], 'status', 'pending',
      'maxAttempts', job[3], 'attempts', '0', 'priority', job[4], 'runAt', run_at,
      'timeoutMs', job[6], 'forceKillOnTimeout', job[7],
      'createdAt', now_text, 'updatedAt', now_text, 'lockedAt', 'null', 'lockedBy', 'null',
      'nextAttemptAt', 'null', 'pendingReason', 'null', 'errorHistory', '[]',
      'failureReason', 'null', 'completedAt', 'null', 'startedAt', 'null',
      'lastRetriedAt', 'null', 'lastFailedAt', 'null', 'lastCancelledAt', 'null',
      'tags', job[8], 'idempotencyKey', key_value, 'waitUntil', 'null', 'waitTokenId', 'null',
      'stepData', '{}', 'retryDelay', job[11], 'retryBackoff', job[12],
      'retryDelayMax', job[13], 'deadLetterJobType', job[14], 'deadLetteredAt', 'null',
      'deadLetterJobId', 'null', 'groupId', job[15], 'groupTier', job[16],
      'dependsOnJobIds', deps_json, 'dependsOnTags', job[18])
    redis.call('SADD', P .. 'status:pending', id_text)
    redis.call('SADD', P .. 'type:' .. job[1], id_text)
    for _, tag in ipairs(job[9]) do
      redis.call('SADD', P .. 'tag:' .. tag, id_text)
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
    place_pending(id_text, job[4], run_at, now)
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
  end
end
local reply = {0}
for _, id in ipairs(ids) do
  table.insert(reply, id)
end
return reply
