-- register_branch: add branch rows to a prepared transaction (tcc, xa, workflow).
--
-- The lease epoch is incremented, so a pass that loaded the transaction before these rows
-- existed (for example a timeout abort racing this call) cannot write and is redone.
--
-- KEYS[1]  trans hash of the transaction
-- KEYS[2]  branches hash of the transaction
--
-- ARGV[1]  now, ms since the Unix epoch (written as update_ms)
-- ARGV[2]  expected kind (tcc, xa or workflow)
-- ARGV[3]  most branch rows the transaction may hold
-- ARGV[4]  most payload bytes the transaction may hold (counted in the trans field bytes)
-- ARGV[5]  payload bytes of the new rows
-- ARGV[6 ..]  new rows, triples: field (<branch_id>:<op>), status, value tail; the stored value
--             is status, ms since the transaction's creation, seq (the number of rows before
--             it) and the tail, separated by tabs (the tail starts with its own tab)
--
-- Returns:
--   {OK}
--   {NOT_FOUND}                no such transaction; nothing written
--   {CONFLICT, status}         the transaction is not prepared; nothing written
--   {KIND_CONFLICT, kind}      it is prepared, but of another kind; nothing written
--   {BRANCH_CONFLICT, field}   a row with this field exists already; nothing written
--   {LIMIT, what, held}        the rows would pass a limit; what: "rows" or "bytes", held: how
--                              many the transaction holds now; nothing written
--
-- Writes: HSET branches (the new rows); HINCRBY trans epoch and bytes; HSET trans update_ms.

local rcall = redis.call
local trans_key = KEYS[1]
local branches_key = KEYS[2]
local now_ms = ARGV[1]
local expected_kind = ARGV[2]
local max_rows = tonumber(ARGV[3])
local max_bytes = tonumber(ARGV[4])
local new_bytes = tonumber(ARGV[5])
local args = ARGV

local OK, NOT_FOUND, CONFLICT, BRANCH_CONFLICT, KIND_CONFLICT, LIMIT = 1, 3, 4, 6, 7, 8

local current = rcall('HMGET', trans_key, 'status', 'create_ms', 'kind', 'bytes')
local status = current[1]
if not status then
  return {NOT_FOUND}
end
if status ~= 'prepared' then
  return {CONFLICT, status}
end
if current[3] ~= expected_kind then
  return {KIND_CONFLICT, current[3]}
end
for i = 6, #args, 3 do
  if rcall('HEXISTS', branches_key, args[i]) == 1 then
    return {BRANCH_CONFLICT, args[i]}
  end
end
local held_rows = rcall('HLEN', branches_key)
if held_rows + (#args - 5) / 3 > max_rows then
  return {LIMIT, 'rows', held_rows}
end
local held_bytes = tonumber(current[4] or '0')
if held_bytes + new_bytes > max_bytes then
  return {LIMIT, 'bytes', held_bytes}
end

local since = tonumber(now_ms) - tonumber(current[2] or now_ms)
if since < 0 then
  since = 0
end
local seq = held_rows
local rows = {}
for i = 6, #args, 3 do
  rows[#rows + 1] = args[i]
  rows[#rows + 1] = args[i + 1] .. '\t' .. since .. '\t' .. seq .. args[i + 2]
  seq = seq + 1
end
-- in chunks: Lua's unpack is limited to a few thousand values
for i = 1, #rows, 1000 do
  rcall('HSET', branches_key, unpack(rows, i, math.min(i + 999, #rows)))
end
rcall('HINCRBY', trans_key, 'epoch', 1)
rcall('HINCRBY', trans_key, 'bytes', new_bytes)
rcall('HSET', trans_key, 'update_ms', now_ms)
return {OK}
