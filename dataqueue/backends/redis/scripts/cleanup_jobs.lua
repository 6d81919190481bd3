-- cleanup_jobs: delete old finished jobs found by one SSCAN step of `P status:<status>`.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  SSCAN cursor ('0' to start)
-- ARGV[2]  SSCAN COUNT hint (the batch size)
-- ARGV[3]  days to keep: jobs whose updatedAt is older than now - days are deleted
-- ARGV[4]  the status: completed, cancelled, or failed (only jobs failed for good:
--          nextAttemptAt null; W-UB-7)
--
-- A deleted job leaves nothing behind (W-UB-7): its hash, tag set, events, idempotency
-- key (if it still names this job), its memberships of status/type/tag/all sets and of
-- its prerequisites' `P dep:<id>` and `P tagdep:<tag>` sets, and its own `P dep:<id>`;
-- it leaves the statistics' counts (stats_on_delete). The tokens the job created go
-- with it, as PostgreSQL's foreign key cascades: their `P waitpoint:<token>`,
-- `P token_waiters:<token>` and `P waitpoint_timeout` entries, and `P job_tokens:<id>`.
-- Returns {next cursor, number deleted}.

local now = now_ms()
local cutoff = now - tonumber(ARGV[3]) * 86400000
local wanted = ARGV[4]
local scan = redis.call('SSCAN', P .. 'status:' .. wanted, ARGV[1], 'COUNT', ARGV[2])
local deleted = 0
for _, id in ipairs(scan[2]) do
  local job_key = P .. 'job:' .. id
  local f = redis.call('HMGET', job_key, 'status', 'updatedAt', 'jobType', 'idempotencyKey',
    'dependsOnJobIds', 'dependsOnTags', 'nextAttemptAt')
  if f[1] ~= wanted then
    if f[1] == false then
      redis.call('SREM', P .. 'status:' .. wanted, id)  -- a stale member
    end
  elseif wanted == 'failed' and not is_null(f[7]) then
    -- a retry is scheduled: not finished
  elseif tonumber(f[2]) and tonumber(f[2]) < cutoff then
    for _, tag in ipairs(redis.call('SMEMBERS', job_key .. ':tags')) do
      redis.call('SREM', P .. 'tag:' .. tag, id)
      redis.call('SREM', P .. 'active_tag:' .. tag, id)
    end
    for _, dep in ipairs(decode_list(f[5])) do
      redis.call('SREM', P .. 'dep:' .. int_text(dep), id)
    end
    for _, tag in ipairs(decode_list(f[6])) do
      redis.call('SREM', P .. 'tagdep:' .. tag, id)
    end
    if f[4] and f[4] ~= 'null' and redis.call('GET', P .. 'idempotency:' .. f[4]) == id then
      redis.call('DEL', P .. 'idempotency:' .. f[4])
    end
    for _, token in ipairs(redis.call('SMEMBERS', P .. 'job_tokens:' .. id)) do
      if redis.call('HGET', P .. 'waitpoint:' .. token, 'jobId') == id then
        redis.call('DEL', P .. 'waitpoint:' .. token, P .. 'token_waiters:' .. token)
        redis.call('ZREM', P .. 'waitpoint_timeout', token)
      end
    end
    stats_on_delete(id, wanted, f[3])
    redis.call('SREM', P .. 'type:' .. f[3], id)
    redis.call('SREM', P .. 'status:' .. wanted, id)
    redis.call('ZREM', P .. 'all', id)
    unplace(id)
    redis.call('DEL', job_key, job_key .. ':tags', P .. 'events:' .. id, P .. 'dep:' .. id,
      P .. 'job_tokens:' .. id)
    deleted = deleted + 1
  end
end
return {scan[1], deleted}
