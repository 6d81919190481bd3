-- stats_rebuild: count the jobs the statistics do not count yet, one range of ids per run.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  'start' or 'step'
-- ARGV[2]  ids per step
--
-- start: forget the counts and count from now on every new job (ids above `P id_seq`),
-- the others not yet: `P stats:tracking` = '0 <id_seq>'. step: count the jobs with ids
-- lo+1 .. lo+ARGV[2] as they are now (each job is counted once: from now on the
-- scripts keep its counts), and raise lo. When lo reaches hi every job is counted:
-- tracking becomes '0 0', and `P stats:offsets` keeps, per status, how many members of
-- `P status:<s>` are not counted (members without a job: none, unless something else
-- wrote the sets), against which stats.lua checks the counts.
-- Each run is atomic and short (a step reads at most ARGV[2] job hashes), so counting
-- the jobs of a large store never blocks Redis for long; concurrent runs share the work.
-- Returns {lo, hi} after the run ({0, 0}: every job is counted).

local STATUSES = {'pending', 'processing', 'completed', 'failed', 'cancelled', 'waiting'}

if ARGV[1] == 'start' then
  local hi = tonumber(redis.call('GET', P .. 'id_seq') or '0')
  redis.call('DEL', P .. 'stats:counts', P .. 'stats:retrying', P .. 'stats:offsets')
  redis.call('SET', P .. 'stats:tracking', '0 ' .. int_text(hi))
end

local value = redis.call('GET', P .. 'stats:tracking')
local lo, hi = string.match(value or '', '^(%d+) (%d+)$')
if not lo then
  return {0, 0}  -- nothing to do (a concurrent start will come)
end
lo, hi = tonumber(lo), tonumber(hi)
if lo < hi then
  local last = math.min(hi, lo + tonumber(ARGV[2]))
  for n = lo + 1, last do
    local id = int_text(n)
    local f = redis.call('HMGET', P .. 'job:' .. id, 'status', 'jobType', 'nextAttemptAt',
      'attempts', 'maxAttempts')
    if f[1] and f[2] then
      stats_add(f[1], f[2], 1)
      if f[1] == 'failed' and not is_null(f[3])
          and (tonumber(f[4]) or 0) < (tonumber(f[5]) or 3) then
        redis.call('SADD', P .. 'stats:retrying', id)
        stats_add('retrying', f[2], 1)
      end
    end
  end
  lo = last
end
if lo < hi then
  redis.call('SET', P .. 'stats:tracking', int_text(lo) .. ' ' .. int_text(hi))
  return {lo, hi}
end

local counted = {}
local counts = redis.call('HGETALL', P .. 'stats:counts')
for k = 1, #counts, 2 do
  local status = string.match(counts[k], '^([^:]*):')
  counted[status] = (counted[status] or 0) + tonumber(counts[k + 1])
end
for _, status in ipairs(STATUSES) do
  local extra = redis.call('SCARD', P .. 'status:' .. status) - (counted[status] or 0)
  redis.call('HSET', P .. 'stats:offsets', status, extra)
end
redis.call('SET', P .. 'stats:tracking', '0 0')
return {0, 0}
