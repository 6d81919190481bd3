-- Shared helpers, prepended to every script of this folder when it is loaded
-- (dataqueue.backends.redis.scripts.load). KEYS[1] is always the key prefix P;
-- every key a script touches is P .. <name> (see keys.py), built here.
local P = KEYS[1]

-- The Redis server's clock in epoch milliseconds (W-R-4: never the client's).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An integer as decimal text, without exponent (Lua's tostring uses %.14g).
local function int_text(n)
  return string.format('%.0f', tonumber(n))
end

-- Member of the ready set `P queue`: the id zero-padded to 20 digits, so that equal
-- scores (equal priority) order by id (W-R-1).
local function queue_member(id)
  return string.format('%020d', tonumber(id))
end

-- Appends one event to `P events:<id>`; its id comes from `P event_id_seq`.
-- meta_json is JSON text built by the caller (never re-encoded here) or nil.
local function add_event(id, event_type, now, meta_json)
  local event_id = redis.call('INCR', P .. 'event_id_seq')
  redis.call('RPUSH', P .. 'events:' .. id,
    '{"id":' .. int_text(event_id) .. ',"jobId":' .. int_text(id) .. ',"eventType":"' ..
    event_type .. '","createdAt":' .. int_text(now) .. ',"metadata":' .. (meta_json or 'null') .. '}')
end

-- Takes a job out of every time/ready index (queue, delayed, retry, waiting).
local function unplace(id)
  redis.call('ZREM', P .. 'queue', queue_member(id))
  redis.call('ZREM', P .. 'delayed', id)
  redis.call('ZREM', P .. 'retry', id)
  redis.call('ZREM', P .. 'waiting', id)
end

-- Puts a pending job where a claim will find it: `queue` (score -priority) when
-- run_at is due, else `delayed` (score run_at ms).
local function place_pending(id, priority, run_at, now)
  redis.call('ZREM', P .. 'queue', queue_member(id))
  redis.call('ZREM', P .. 'delayed', id)
  if tonumber(run_at) <= now then
    redis.call('ZADD', P .. 'queue', 0 - tonumber(priority), queue_member(id))
  else
    redis.call('ZADD', P .. 'delayed', run_at, id)
  end
end

-- Moves a job between status sets and sets its status field.
local function set_status(id, old, new)
  if old then
    redis.call('SREM', P .. 'status:' .. old, id)
  end
  redis.call('SADD', P .. 'status:' .. new, id)
  redis.call('HSET', P .. 'job:' .. id, 'status', new)
end

-- A JSON text field that may be 'null' or empty, decoded (only for reading ids/tags).
local function decode_list(text)
  if text == false or text == nil or text == '' or text == 'null' then
    return {}
  end
  local ok, value = pcall(cjson.decode, text)
  if not ok or type(value) ~= 'table' then
    return {}
  end
  return value
end

-- Ids ordered newest first (createdAt DESC, then id DESC) from {score, id} pairs in
-- score-descending order, as ZREVRANGE* returns them (equal scores are adjacent but
-- ordered by member text). Each run of equal scores is sorted numerically.
local function newest_first(rows)
  local out = {}
  local i = 1
  while i <= #rows do
    local j = i
    local ids = {}
    while j <= #rows and rows[j][1] == rows[i][1] do
      table.insert(ids, rows[j][2])
      j = j + 1
    end
    table.sort(ids)
    for k = #ids, 1, -1 do
      table.insert(out, ids[k])
    end
    i = j
  end
  return out
end
