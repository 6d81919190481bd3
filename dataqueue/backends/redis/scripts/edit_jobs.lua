-- edit_jobs: apply the same field updates to pending jobs, one `edited` event each.
--
-- KEYS[1]  key prefix P
-- (ARGV[1] caller id and ARGV[2] call token come first: a retried call returns the
-- first call's count without changing anything again; the numbers below follow them)
-- ARGV[1]  metadata JSON of the `edited` event (built by the client)
-- ARGV[2]  n, the number of hash field/value pairs that follow
-- ARGV[3 .. 2+2n]  field, value, ... (encoded as in the job hash; runAt '' means now)
-- ARGV[3+2n]  'keep' (tags unchanged) or 'set'
-- if 'set':  ARGV[4+2n] = m, then m tags (the new tag set; m = 0 with tags 'null' or '[]')
-- then: the job ids
--
-- Jobs that are not pending are left alone (no event, W-EV-3). A change of runAt or
-- priority takes effect at once: the job moves between `P queue` and `P delayed`
-- (W-R-2). Tags move between `P tag:<t>`/`P active_tag:<t>` sets and `P job:<id>:tags`.
-- Returns the number of jobs changed.

-- A reply kept for a retry of the same call (see RedisBackend._run_once): `P call:<caller>`
-- holds '<token>|<reply text>' for 60 s.
local CALLER, CALL_TOKEN = ARGV[1], call_token()
local previous_reply = call_reply
local function keep_reply(text)
  redis.call('SET', P .. 'call:' .. CALLER, CALL_TOKEN .. '|' .. text, 'EX', 60)
end
local kept = previous_reply()
if kept then
  return tonumber(kept)
end
local A = {}
for k = 3, #ARGV do
  A[k - 2] = ARGV[k]
end

local meta = A[1]
local n = tonumber(A[2])
local pos = 3 + 2 * n
local set_tags = A[pos] == 'set'
local new_tags = {}
pos = pos + 1
if set_tags then
  local m = tonumber(A[pos])
  for k = 1, m do
    new_tags[k] = A[pos + k]
  end
  pos = pos + m + 1
end
local now = now_ms()
local now_text = int_text(now)
local replaces_place = false
local fields = {}
for k = 0, n - 1 do
  local field, value = A[3 + 2 * k], A[4 + 2 * k]
  if field == 'runAt' and value == '' then
    value = now_text
  end
  -- maxAttempts too: a raised limit makes an exhausted job claimable again.
  if field == 'runAt' or field == 'priority' or field == 'maxAttempts' then
    replaces_place = true
  end
  table.insert(fields, field)
  table.insert(fields, value)
end
table.insert(fields, 'updatedAt')
table.insert(fields, now_text)

local changed = 0
for k = pos, #A do
  local id = A[k]
  local job_key = P .. 'job:' .. id
  if redis.call('HGET', job_key, 'status') == 'pending' then
    redis.call('HSET', job_key, unpack(fields))
    if set_tags then
      local old_tags = redis.call('SMEMBERS', job_key .. ':tags')
      for _, tag in ipairs(old_tags) do
        redis.call('SREM', P .. 'tag:' .. tag, id)
        redis.call('SREM', P .. 'active_tag:' .. tag, id)
      end
      redis.call('DEL', job_key .. ':tags')
      for _, tag in ipairs(new_tags) do
        redis.call('SADD', P .. 'tag:' .. tag, id)
        redis.call('SADD', P .. 'active_tag:' .. tag, id)
        redis.call('SADD', job_key .. ':tags', tag)
      end
      -- A tag it no longer has may have been the last barrier of a blocked job.
      for _, tag in ipairs(old_tags) do
        for _, dependent in ipairs(redis.call('SMEMBERS', P .. 'tagdep:' .. tag)) do
          recheck_blocked(dependent)
        end
      end
    end
    if replaces_place then
      place_pending(id, redis.call('HGET', job_key, 'runAt'), now)
    end
    add_event(id, 'edited', now, meta)
    changed = changed + 1
  end
end
keep_reply(int_text(changed))
return changed
