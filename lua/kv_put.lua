-- kv_put: write or delete one KV entry, guarded by its version (optimistic concurrency).
--
-- KEYS[1]  data hash of the category (<prefix>:{kv:<cat>}:data), field = key
-- KEYS[2]  keys sorted set of the category (score 0, ordered by key), for paging
--
-- ARGV[1]  key
-- ARGV[2]  expected version: "0" means the entry must not exist yet
-- ARGV[3]  now, ms since the Unix epoch
-- ARGV[4]  "put" or "delete"
-- ARGV[5]  put: the new value (any text); delete: ignored
--
-- The stored field value is "<version>\t<create_ms>\t<update_ms>\t<value>".
--
-- Returns:
--   {OK, version}        written; version is the new one (0 after a delete)
--   {NOT_FOUND}          the entry does not exist and ARGV[2] is not "0"; nothing written
--   {CONFLICT, version}  the stored version differs from ARGV[2]; nothing written
--
-- Writes: HSET or HDEL data; ZADD or ZREM keys.

local rcall = redis.call
local data_key = KEYS[1]
local keys_key = KEYS[2]
local key = ARGV[1]
local expected = tonumber(ARGV[2])
local now_ms = ARGV[3]
local mode = ARGV[4]
local value = ARGV[5]

local OK, NOT_FOUND, CONFLICT = 1, 3, 4

if mode ~= 'put' and mode ~= 'delete' then
  return redis.error_reply('kv_put: unknown mode ' .. tostring(mode))
end
local current = rcall('HGET', data_key, key)
local version, created = 0, now_ms
if current then
  local v, c = string.match(current, '^(%d+)\t(%d+)\t')
  version, created = tonumber(v), c
end
if not current and expected ~= 0 then
  return {NOT_FOUND}
end
if version ~= expected then
  return {CONFLICT, version}
end

if mode == 'delete' then
  rcall('HDEL', data_key, key)
  rcall('ZREM', keys_key, key)
  return {OK, 0}
end
local next_version = version + 1
rcall('HSET', data_key, key, next_version .. '\t' .. created .. '\t' .. now_ms .. '\t' .. value)
rcall('ZADD', keys_key, 0, key)
return {OK, next_version}
