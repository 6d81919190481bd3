-- page_scan: one page of the jobs that are in every given set, newest first
-- (createdAt DESC, then id DESC), found by walking `P all` from the newest job.
--
-- KEYS[1]  key prefix P
-- ARGV[1]  offset
-- ARGV[2]  limit (> 0)
-- ARGV[3..]  names of the sets, after the prefix (e.g. 'status:pending', 'type:email')
--
-- Cost: O(jobs newer than the page's last match, plus the jobs created in the same
-- millisecond), each checked with SMISMEMBER per set. The backend picks this script
-- when the sets are large compared with the page (a common status or type), where
-- reading whole sets would cost more. Read only.

local offset = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local wanted = offset + limit
local sets = {}
for k = 3, #ARGV do
  table.insert(sets, P .. ARGV[k])
end
local chunk = 500
local matched = {}
local stop_score = nil
local start = 0
local done = false
while not done do
  local rows = redis.call('ZREVRANGE', P .. 'all', start, start + chunk - 1, 'WITHSCORES')
  if #rows == 0 then
    break
  end
  local members = {}
  for k = 1, #rows, 2 do
    table.insert(members, rows[k])
  end
  local ok = {}
  for _, set in ipairs(sets) do
    local flags = redis.call('SMISMEMBER', set, unpack(members))
    for i = 1, #members do
      if flags[i] == 0 then
        ok[i] = false
      end
    end
  end
  for i = 1, #members do
    local score = tonumber(rows[2 * i])
    if stop_score and score < stop_score then
      done = true
      break
    end
    if ok[i] ~= false then
      table.insert(matched, {score, tonumber(members[i])})
      if #matched == wanted then
        stop_score = score  -- finish this millisecond: its ids order by number
      end
    end
  end
  start = start + chunk
end
local ordered = newest_first(matched)
local page = {}
for k = offset + 1, math.min(offset + limit, #ordered) do
  table.insert(page, ordered[k])
end
return page
