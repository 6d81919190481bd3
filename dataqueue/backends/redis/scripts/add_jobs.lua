-- add_jobs: insert a batch of jobs with one `added` event each, all or nothing.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  caller id, ARGV[2] call token: a retried call (same token) returns the first
--          call's reply without writing again
-- ARGV[3]  JSON array of jobs, each an array of 20 or 21 entries (codec.batch_row):
--    1 jobType            2 payload (JSON text)     3 maxAttempts       4 priority
--    5 runAt ms or ''     6 timeoutMs or 'null'     7 forceKillOnTimeout 'true'|'false'
--    8 tags JSON or 'null'   9 tag list             10 idempotencyKey or ''
--   11 retryDelay        12 retryBackoff           13 retryDelayMax    14 deadLetterJobType
--   15 groupId           16 groupTier              17 dependsOn job ids (-k: batch job k-1)
--   18 dependsOnTags JSON or 'null'                19 dependsOn tag list
--   20 `added` metadata JSON without dependsOn and without its closing brace
--   21 stepData JSON (the trace context, dataqueue.tracing); absent: {}
--   (absent values are the string 'null'; user JSON travels as text, never re-encoded)
--
-- Returns {0, id, ...} (input order; -id for an idempotent duplicate, which wrote
-- nothing) or {1, missing prerequisite id, ...} having
-- written nothing. A job whose idempotency key exists (or repeats an earlier key of
-- the batch) gets that job's id and writes nothing (no second `added` event).
-- Ids are INCR'd in input order, in the script that stamps createdAt.

-- A reply kept for a retry of the same call (see RedisBackend._run_once): `P call:<caller>`
-- holds '<token>|<reply text>' for 60 s.
local CALLER, CALL_TOKEN = ARGV[1], call_token()
local previous_reply = call_reply
local function keep_reply(text)
  redis.call('SET', P .. 'call:' .. CALLER, CALL_TOKEN .. '|' .. text, 'EX', 60)
end

local kept = previous_reply()
if kept then
  local reply = {}
  for value in string.gmatch(kept, '[^,]+') do
    table.insert(reply, tonumber(value))
  end
  return reply
end

local jobs = cjson.decode(ARGV[3])
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
for i, job in ipairs(jobs) do
  if kind[i] == 'existing' then
    ids[i] = tonumber(ref[i])
  elseif kind[i] == 'dup' then
    ids[i] = ids[ref[i]]
  else
    local deps = {}
    for n, dep in ipairs(job[17]) do
      if dep < 0 then
        deps[n] = int_text(ids[-dep])
      else
        deps[n] = int_text(dep)
      end
    end
    ids[i] = tonumber(insert_job(job, deps, now))
  end
end
local reply = {0}
for i, id in ipairs(ids) do
  if kind[i] == 'new' then
    table.insert(reply, id)
  else
    table.insert(reply, -id)  -- an idempotent duplicate: nothing was written
  end
end
local texts = {}
for n, value in ipairs(reply) do
  texts[n] = int_text(value)
end
keep_reply(table.concat(texts, ','))
return reply
