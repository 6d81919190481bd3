-- reclaim: release the jobs of workers that are gone.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  caller id, ARGV[2] call token (RedisBackend._run_once): a retried call
--          returns the first run's reply without acting again; the numbers below
--          count from ARGV[3] (args(n) is ARGV[n + 2])
-- args(1)  'abandoned' (jobs of registered workers only) or 'all'
-- args(2)  ms a job of an unregistered worker may stay locked (with 'all')
-- args(3)  the error message of a job that fails because it was reclaimed on its last
--          attempt
--
-- A processing job locked by a registered worker (`P workers`) is released once its
-- lockedAt is older than that worker's heartbeat timeout. With 'all', a job locked by
-- an unregistered worker (e.g. upstream's Node.js processor) is released once locked
-- longer than max(args(2), timeoutMs), and workers silent for an hour that hold no job
-- are forgotten. A released job goes back to pending (locks cleared, due as before),
-- or, on its last attempt, fails for good with reason timeout (W-RT-1) and a `failed`
-- event. Cost: O(processing jobs + workers). Returns the number of jobs released.

local kept = call_reply()
if kept then
  return tonumber(kept)
end

local mode = args(1)
local max_ms = tonumber(args(2))
local message = args(3)
local now = now_ms()
local now_text = int_text(now)

local timeouts = {}
local heartbeats = {}
local registry = redis.call('HGETALL', P .. 'workers')
for k = 1, #registry, 2 do
  local ok, entry = pcall(cjson.decode, registry[k + 1])
  if ok and type(entry) == 'table' then
    timeouts[registry[k]] = tonumber(entry.timeoutMs) or 0
    heartbeats[registry[k]] = tonumber(entry.heartbeatAt) or 0
  end
end

local holders = {}
local count = 0
local message_json = cjson.encode(message)
for _, id in ipairs(redis.call('SMEMBERS', P .. 'status:processing')) do
  local job_key = P .. 'job:' .. id
  local f = redis.call('HMGET', job_key, 'lockedBy', 'lockedAt', 'timeoutMs', 'attempts',
    'maxAttempts', 'runAt', 'errorHistory', 'status')
  local owner, locked_at = f[1], tonumber(f[2]) or 0
  local stale = false
  if f[8] ~= 'processing' then
    redis.call('SREM', P .. 'status:processing', id)  -- a stale member
  elseif owner and timeouts[owner] then
    stale = locked_at < now - timeouts[owner]
  elseif mode == 'all' then
    local allowed = max_ms
    local timeout_ms = tonumber(f[3])
    if timeout_ms and timeout_ms > allowed then
      allowed = timeout_ms
    end
    stale = locked_at < now - allowed
  end
  if f[8] == 'processing' and not stale and owner then
    holders[owner] = true
  end
  if stale then
    count = count + 1
    if (tonumber(f[4]) or 0) >= (tonumber(f[5]) or 0) then
      local entry = '{"message":' .. message_json .. ',"timestamp":"' .. iso_ms(now) .. '"}'
      local history = f[7]
      if is_null(history) or history == '[]' then
        history = '[' .. entry .. ']'
      else
        history = string.sub(history, 1, -2) .. ',' .. entry .. ']'
      end
      redis.call('HSET', job_key, 'nextAttemptAt', 'null', 'failureReason', 'timeout',
        'lastFailedAt', now_text, 'updatedAt', now_text, 'errorHistory', history)
      set_status(id, 'processing', 'failed')
      add_event(id, 'failed', now, '{"message":' .. message_json ..
        ',"failureReason":"timeout","deadLetterJobId":null}')
    else
      redis.call('HSET', job_key, 'lockedAt', 'null', 'lockedBy', 'null', 'updatedAt', now_text)
      set_status(id, 'processing', 'pending')
      place_pending(id, f[6], now)
    end
  end
end

if mode == 'all' then
  for worker, beat in pairs(heartbeats) do
    if beat < now - 3600000 and not holders[worker] then
      redis.call('HDEL', P .. 'workers', worker)
    end
  end
end
if count > 0 then
  keep_call_reply(int_text(count))
end
return count
