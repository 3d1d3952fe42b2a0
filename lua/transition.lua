-- transition: change the status of a transaction on behalf of an API call, taking its lease over.
--
-- The lease epoch is always incremented, so a replica still driving the transaction under the
-- old epoch can no longer write (record.lua refuses it).
--
-- KEYS[1]  trans hash of the transaction
-- KEYS[2]  branches hash of the transaction
-- KEYS[3]  due sorted set of the shard (score = next attention time, ms)
--
-- ARGV[1]  gid
-- ARGV[2]  expected kind, or "" for any (the kind of a gid never changes)
-- ARGV[3]  expected current status (compare-and-set)
-- ARGV[4]  new status
-- ARGV[5]  now, ms since the Unix epoch (written as update_ms)
-- ARGV[6]  schedule: "hold" (the caller drives it now and holds the lease until ARGV[7]) or
--          "finish" (leave the due set; every key expires after ARGV[7])
-- ARGV[7]  hold: lease expiry, ms since the Unix epoch; finish: retention, ms
-- ARGV[8]  owner, the id of the calling replica
-- ARGV[9]  n, the number of trans hash field/value pairs that follow
-- ARGV[10 .. 9+2n]  trans hash field/value pairs to set
--
-- Returns:
--   {OK, epoch, trans, branches}   trans and branches: HGETALL replies after the change
--   {NOT_FOUND}                    no such transaction; nothing written
--   {CONFLICT, status}             the status is not the expected one; nothing written
--   {KIND_CONFLICT, kind}          the status is, but the kind is another; nothing written
--
-- Writes: HINCRBY epoch; HSET trans (status, update_ms, owner, next_ms and the given fields);
--         ZADD or ZREM due; PEXPIRE trans and branches on finish.

local rcall = redis.call
local trans_key = KEYS[1]
local branches_key = KEYS[2]
local due_key = KEYS[3]
local gid = ARGV[1]
local expected_kind = ARGV[2]
local expected_status = ARGV[3]
local new_status = ARGV[4]
local now_ms = ARGV[5]
local schedule = ARGV[6]
local when = ARGV[7]
local owner = ARGV[8]
local n_fields = tonumber(ARGV[9])
local args = ARGV

local OK, NOT_FOUND, CONFLICT, KIND_CONFLICT = 1, 3, 4, 7

if schedule ~= 'hold' and schedule ~= 'finish' then
  return redis.error_reply('transition: unknown schedule ' .. schedule)
end
local current = rcall('HMGET', trans_key, 'status', 'kind')
local status = current[1]
if not status then
  return {NOT_FOUND}
end
if status ~= expected_status then
  return {CONFLICT, status}
end
if expected_kind ~= '' and current[2] ~= expected_kind then
  return {KIND_CONFLICT, current[2]}
end

local fields = {}
for i = 10, 9 + 2 * n_fields do
  fields[#fields + 1] = args[i]
end
fields[#fields + 1] = 'status'
fields[#fields + 1] = new_status
fields[#fields + 1] = 'update_ms'
fields[#fields + 1] = now_ms
local epoch = rcall('HINCRBY', trans_key, 'epoch', 1)
if schedule == 'hold' then
  fields[#fields + 1] = 'owner'
  fields[#fields + 1] = owner
  fields[#fields + 1] = 'next_ms'
  fields[#fields + 1] = when
  rcall('HSET', trans_key, unpack(fields))
  rcall('ZADD', due_key, when, gid)
else
  fields[#fields + 1] = 'owner'
  fields[#fields + 1] = ''
  rcall('HSET', trans_key, unpack(fields))
  rcall('HDEL', trans_key, 'next_ms')
  rcall('ZREM', due_key, gid)
  rcall('PEXPIRE', trans_key, when)
  rcall('PEXPIRE', branches_key, when)
end
return {OK, epoch, rcall('HGETALL', trans_key), rcall('HGETALL', branches_key)}
