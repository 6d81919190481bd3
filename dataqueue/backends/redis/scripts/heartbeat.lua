-- heartbeat: register (or refresh) a worker and refresh the locks of its jobs.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  worker id
-- ARGV[2]  the worker's heartbeat timeout in ms
-- ARGV[3]  host name
-- ARGV[4]  process id
-- ARGV[5..] ids of the jobs the worker holds
--
-- `P workers` (hash: worker id -> JSON {heartbeatAt, timeoutMs, hostname, pid,
-- startedAt}) is the registry reclaim reads. lockedAt of each job still held (status
-- processing, lockedBy = worker) becomes now. Returns the ids still held.

local worker = ARGV[1]
local now = now_ms()
local now_text = int_text(now)
local started = now_text
local previous = redis.call('HGET', P .. 'workers', worker)
if previous then
  local ok, entry = pcall(cjson.decode, previous)
  if ok and type(entry) == 'table' and entry.startedAt then
    started = int_text(entry.startedAt)
  end
end
redis.call('HSET', P .. 'workers', worker, '{"heartbeatAt":' .. now_text .. ',"timeoutMs":' ..
  int_text(ARGV[2]) .. ',"hostname":' .. cjson.encode(ARGV[3]) .. ',"pid":' .. int_text(ARGV[4]) ..
  ',"startedAt":' .. started .. '}')
local held = {}
for k = 5, #ARGV do
  local id = ARGV[k]
  local job_key = P .. 'job:' .. id
  local f = redis.call('HMGET', job_key, 'status', 'lockedBy')
  if f[1] == 'processing' and f[2] == worker then
    redis.call('HSET', job_key, 'lockedAt', now_text)
    table.insert(held, id)
  end
end
return held
