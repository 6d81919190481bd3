-- create_token: store a new waiting token (waitpoint).
--
-- KEYS[1]  key prefix P
-- ARGV[1]  caller id, ARGV[2] call token: a retried call (same token) returns the first
--          call's reply without acting again (RedisBackend._run_once)
-- ARGV[3]  token id
-- ARGV[4]  id of the job that creates it, or '' (a token made outside a handler)
-- ARGV[5]  timeout in milliseconds from now, or '' (no timeout)
-- ARGV[6]  tags JSON (text from the client, stored as is), or 'null'
--
-- Writes `P waitpoint:<id>` (id, jobId, status waiting, output 'null', timeoutAt,
-- createdAt now, completedAt 'null', tags) and, with a timeout, adds the id to
-- `P waitpoint_timeout` (score timeoutAt). A token of a job is also added to the job's
-- `P job_tokens:<jobId>`, so that deleting the job deletes it (PostgreSQL's cascade).
-- Nothing is written when a token with this
-- id exists (an existing token is never overwritten) or when the job does not exist
-- (PostgreSQL: primary key and foreign key violations).
-- Returns 1 if created, 0 if the id is taken, -1 if the job does not exist.

-- A reply kept for a retry of the same call: `P call:<caller>` holds
-- '<call token>|<reply text>' for 60 s (as in add_jobs.lua).
local CALLER, CALL_TOKEN = ARGV[1], call_token()
local previous_reply = call_reply
local function reply(outcome)
  redis.call('SET', P .. 'call:' .. CALLER, CALL_TOKEN .. '|' .. outcome, 'EX', 60)
  return outcome
end
local kept = previous_reply()
if kept then
  return tonumber(kept)
end

local token, job_id, timeout_ms, tags = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local key = P .. 'waitpoint:' .. token
if redis.call('EXISTS', key) == 1 then
  return reply(0)
end
if job_id ~= '' and redis.call('EXISTS', P .. 'job:' .. job_id) == 0 then
  return reply(-1)
end
local now = now_ms()
local timeout_at = 'null'
if timeout_ms ~= '' then
  timeout_at = int_text(now + tonumber(timeout_ms))
  redis.call('ZADD', P .. 'waitpoint_timeout', timeout_at, token)
end
local job_value = 'null'
if job_id ~= '' then
  job_value = job_id
end
redis.call('HSET', key, 'id', token, 'jobId', job_value, 'status', 'waiting',
  'output', 'null', 'timeoutAt', timeout_at, 'createdAt', int_text(now),
  'completedAt', 'null', 'tags', tags)
if job_id ~= '' then
  redis.call('SADD', P .. 'job_tokens:' .. job_id, token)
end
return reply(1)
