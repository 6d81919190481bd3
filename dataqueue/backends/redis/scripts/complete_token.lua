-- complete_token: complete a waiting token and resume the jobs waiting on it.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  caller id, ARGV[2] call token: a retried call (same token) returns the first
--          call's reply (RedisBackend._run_once), so it still reports "completed"
-- ARGV[3]  token id
-- ARGV[4]  output JSON (text from the client, stored as is), or 'null' (no data)
--
-- Only when `P waitpoint:<id>` exists with status waiting: status completed, output,
-- completedAt now; the id leaves `P waitpoint_timeout` (nothing left to expire).
-- Every job in `P token_waiters:<id>` (and the token's jobId) whose status is waiting
-- and whose waitTokenId is this token resumes as on PostgreSQL: it stays waiting with
-- waitTokenId cleared and waitUntil = updatedAt = now, and goes to its ready queue, so
-- the claim resumes it without consuming an attempt (W-TOK-1, W-TOK-3). No job event.
-- `P token_waiters:<id>` is deleted. wait_job.lua handles a job that starts waiting
-- after this (W-TOK-2).
-- Returns 1 if the token completed, 0 if it had already completed or timed out,
-- -1 if there is no such token.

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
local token, output = ARGV[3], ARGV[4]
local key = P .. 'waitpoint:' .. token
local f = redis.call('HMGET', key, 'status', 'jobId')
if not f[1] then
  return reply(-1)
end
if f[1] ~= 'waiting' then
  return reply(0)
end
local now_text = int_text(now_ms())
redis.call('HSET', key, 'status', 'completed', 'output', output, 'completedAt', now_text)
redis.call('ZREM', P .. 'waitpoint_timeout', token)
resume_token_waiters(token, f[2], now_text)
return reply(1)
