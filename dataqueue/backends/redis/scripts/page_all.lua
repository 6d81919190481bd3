-- page_all: one page of every job id, newest first (createdAt DESC, then id DESC).
--
-- KEYS[1]  key prefix P
-- ARGV[1]  offset
-- ARGV[2]  limit (> 0)
--
-- `P all` scores are createdAt ms; Redis orders equal scores by member text, not by
-- number, so the page is read by rank, then the ids sharing its boundary scores are
-- re-read and ordered by id. Cost: O(log n + limit + jobs created in the same
-- millisecond as the page's first or last job). Read only.

local offset = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local head = redis.call('ZREVRANGE', P .. 'all', offset, offset + limit - 1, 'WITHSCORES')
if #head == 0 then
  return {}
end
local top, bottom = head[2], head[#head]
local above = redis.call('ZCOUNT', P .. 'all', '(' .. top, '+inf')
local group = redis.call('ZREVRANGEBYSCORE', P .. 'all', top, bottom, 'WITHSCORES')
local rows = {}
for k = 1, #group, 2 do
  table.insert(rows, {tonumber(group[k + 1]), tonumber(group[k])})
end
local ordered = newest_first(rows)
local page = {}
local first = offset - above + 1
for k = first, math.min(first + limit - 1, #ordered) do
  table.insert(page, ordered[k])
end
return page
