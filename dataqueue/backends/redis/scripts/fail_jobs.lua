-- fail_jobs: record failed attempts of jobs this worker holds, atomically.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  caller id, ARGV[2] call token (RedisBackend._run_once): a retried call
--          returns the first run's reply without acting again; the numbers below
--          count from ARGV[3] (args(n) is ARGV[n + 2])
-- args(1)  worker id
-- then per failure 5 values:
--   job id; the message as a JSON string literal (encoded by the client); failure
--   reason ('' for none); seconds until the retry ('' when it failed for good, the
--   delay with its jitter computed by the client); the failure time (ISO-8601 text)
--
-- As on PostgreSQL, only jobs with status processing and lockedBy = worker change:
-- status failed, updatedAt/lastFailedAt now, failureReason, nextAttemptAt (now + delay,
-- or null), one {message, timestamp} entry appended to errorHistory, locks and stepData
-- kept. A scheduled retry goes to `P retry`. A job that failed for good with a
-- deadLetterJobType creates the dead-letter job (envelope payload, maxAttempts 1,
-- priority 0, due now, with its `added` event) and records deadLetterJobId and
-- deadLetteredAt. Each failure writes a `failed` event {message, failureReason?,
-- deadLetterJobId}. Jobs that failed for good cancel their dependents (cascade).
-- Returns per changed job: id, will retry ('1'|'0'), dead-letter job id (0: none).

local kept = kept_array_reply()
if kept then
  return kept
end
local n_args = #ARGV - 2

local worker = args(1)
local now = now_ms()
local now_text = int_text(now)
local reply = {}
local seeds = {}

for k = 2, n_args, 5 do
  local id = args(k)
  local message_json, reason, delay, failed_at = args(k + 1), args(k + 2), args(k + 3), args(k + 4)
  local job_key = P .. 'job:' .. id
  local f = redis.call('HMGET', job_key, 'status', 'lockedBy', 'errorHistory', 'jobType',
    'payload', 'attempts', 'maxAttempts', 'deadLetterJobType')
  if f[1] == 'processing' and f[2] == worker then
    local entry = '{"message":' .. message_json .. ',"timestamp":"' .. failed_at .. '"}'
    local history = f[3]
    if is_null(history) or history == '[]' then
      history = '[' .. entry .. ']'
    else
      history = string.sub(history, 1, -2) .. ',' .. entry .. ']'
    end
    local reason_value = 'null'
    if reason ~= '' then
      reason_value = reason
    end
    local next_attempt = 'null'
    if delay ~= '' then
      next_attempt = int_text(now + math.floor(tonumber(delay) * 1000))
    end
    redis.call('HSET', job_key, 'updatedAt', now_text, 'lastFailedAt', now_text,
      'failureReason', reason_value, 'nextAttemptAt', next_attempt, 'errorHistory', history)
    set_status(id, 'processing', 'failed')
    local dead_letter_id = '0'
    if delay ~= '' then
      redis.call('ZADD', P .. 'retry', next_attempt, id)
      wake(f[4])  -- processors sleep until the earliest due time they know of
    else
      table.insert(seeds, id)
      if not is_null(f[8]) then
        local reason_json = 'null'
        if reason ~= '' then
          reason_json = '"' .. reason .. '"'
        end
        local type_json = cjson.encode(f[4])
        local envelope = '{"originalJob":{"id":' .. id .. ',"jobType":' .. type_json ..
          ',"attempts":' .. int_text(f[6]) .. ',"maxAttempts":' .. int_text(f[7]) ..
          '},"originalPayload":' .. f[5] .. ',"failure":{"message":' .. message_json ..
          ',"reason":' .. reason_json .. ',"failedAt":"' .. failed_at .. '"}}'
        local head = '{"jobType":' .. cjson.encode(f[8]) .. ',"sourceJobId":' .. id ..
          ',"sourceJobType":' .. type_json
        dead_letter_id = insert_job({f[8], envelope, '1', '0', '', 'null', 'false', 'null', {},
          '', 'null', 'null', 'null', 'null', 'null', 'null', {}, 'null', {}, head}, {}, now)
        redis.call('HSET', job_key, 'deadLetterJobId', dead_letter_id,
          'deadLetteredAt', now_text)
      end
    end
    local meta = '{"message":' .. message_json
    if reason ~= '' then
      meta = meta .. ',"failureReason":"' .. reason .. '"'
    end
    if dead_letter_id == '0' then
      meta = meta .. ',"deadLetterJobId":null}'
    else
      meta = meta .. ',"deadLetterJobId":' .. dead_letter_id .. '}'
    end
    add_event(id, 'failed', now, meta)
    local will_retry = '0'
    if delay ~= '' then
      will_retry = '1'
    end
    table.insert(reply, id)
    table.insert(reply, will_retry)
    table.insert(reply, dead_letter_id)
  end
end
cascade(seeds, now)
if #reply > 0 then
  keep_array_reply(reply)
end
return reply
