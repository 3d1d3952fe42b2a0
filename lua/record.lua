-- record: write the progress of a leased transaction and schedule it, fenced by its lease epoch.
--
-- KEYS[1]  trans hash of the transaction
-- KEYS[2]  branches hash of the transaction
-- KEYS[3]  due sorted set of the shard (score = next attention time, ms)
--
-- ARGV[1]  gid
-- ARGV[2]  lease epoch the caller holds
-- ARGV[3]  expected current status (compare-and-set)
-- ARGV[4]  new status, or "" to keep the current one
-- ARGV[5]  now, ms since the Unix epoch (written as update_ms)
-- ARGV[6]  schedule: "hold" (keep the lease until ARGV[7]), "release" (give the lease up, due at
--          ARGV[7]), "park" (give the lease up, not due until an API call) or "finish"
--          (leave the due set; every key expires after ARGV[7])
-- ARGV[7]  hold: lease expiry, ms since the Unix epoch; release: due time, ms since the Unix
--          epoch; finish: retention, ms; park: ignored
-- ARGV[8]  owner, the id of the calling replica (written as owner when holding)
-- ARGV[9]  row time, ms since the transaction's creation (written into each updated branch row)
-- ARGV[10]  n, the number of trans hash field/value pairs that follow
-- ARGV[11 .. 10+2n]  trans hash field/value pairs to set
-- ARGV[11+2n ..]    branch updates, triples: field, expected branch status, new branch status
--
-- Returns:
--   {OK}
--   {NOT_FOUND}                 no such transaction; nothing written
--   {STALE_EPOCH, epoch}        the lease was taken over; nothing written
--   {CONFLICT, status}          the status is not the expected one; nothing written
--   {BRANCH_CONFLICT, field}    a branch row is missing or not in its expected status; nothing written
--
-- Writes: HSET trans (status, update_ms, owner, next_ms and the given fields); each branch row's
--         status and update time; ZADD or ZREM due; PEXPIRE trans and branches on finish.

local rcall = redis.call
local trans_key = KEYS[1]
local branches_key = KEYS[2]
local due_key = KEYS[3]
local gid = ARGV[1]
local epoch = ARGV[2]
local expected_status = ARGV[3]
local new_status = ARGV[4]
local now_ms = ARGV[5]
local schedule = ARGV[6]
local when = ARGV[7]
local owner = ARGV[8]
local row_time = ARGV[9]
local n_fields = tonumber(ARGV[10])
local args = ARGV

local OK, NOT_FOUND, CONFLICT, STALE_EPOCH, BRANCH_CONFLICT = 1, 3, 4, 5, 6

if schedule ~= 'hold' and schedule ~= 'release' and schedule ~= 'park' and schedule ~= 'finish' then
  return redis.error_reply('record: unknown schedule ' .. schedule)
end

local current = rcall('HMGET', trans_key, 'status', 'epoch')
if not current[1] then
  return {NOT_FOUND}
end
if current[2] ~= epoch then
  return {STALE_EPOCH, current[2] or '0'}
end
if current[1] ~= expected_status then
  return {CONFLICT, current[1]}
end

local first_branch = 11 + 2 * n_fields
local rows = {}
for i = first_branch, #args, 3 do
  local row = rcall('HGET', branches_key, args[i])
  local expected = args[i + 1] .. '\t'
  if not row or string.sub(row, 1, #expected) ~= expected then
    return {BRANCH_CONFLICT, args[i]}
  end
  -- keep everything from the second tab on (seq, url, data)
  local rest = string.match(row, '^[^\t]*\t[^\t]*(\t.*)$')
  if not rest then
    return {BRANCH_CONFLICT, args[i]}
  end
  rows[#rows + 1] = args[i]
  rows[#rows + 1] = args[i + 2] .. '\t' .. row_time .. rest
end

-- all guards passed: write
-- (in chunks: Lua's unpack is limited to a few thousand values)
for i = 1, #rows, 1000 do
  rcall('HSET', branches_key, unpack(rows, i, math.min(i + 999, #rows)))
end
local fields = {}
for i = 11, first_branch - 1 do
  fields[#fields + 1] = args[i]
end
if new_status ~= '' then
  fields[#fields + 1] = 'status'
  fields[#fields + 1] = new_status
end
fields[#fields + 1] = 'update_ms'
fields[#fields + 1] = now_ms
fields[#fields + 1] = 'owner'
if schedule == 'hold' then
  fields[#fields + 1] = owner
else
  fields[#fields + 1] = ''
end
if schedule == 'hold' or schedule == 'release' then
  fields[#fields + 1] = 'next_ms'
  fields[#fields + 1] = when
  rcall('HSET', trans_key, unpack(fields))
  rcall('ZADD', due_key, when, gid)
else
  rcall('HSET', trans_key, unpack(fields))
  rcall('HDEL', trans_key, 'next_ms')
  rcall('ZREM', due_key, gid)
  if schedule == 'finish' then
    rcall('PEXPIRE', trans_key, when)
    rcall('PEXPIRE', branches_key, when)
  end
end
return {OK}
