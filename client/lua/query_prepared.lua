-- query_prepared: answers a msg check-back from the Redis barrier.
--
-- KEYS[1]  barrier key of the msg's local operation (gid, 00, msg, 01)
-- ARGV[1]  barrier key lifetime, seconds
--
-- Returns:
--   0  the local operation ran: the msg may be submitted
--   3  it did not; the key now says so, so it never will
--
-- Writes: KEYS[1] = "rollback" with EX ARGV[1] when it was missing.
local rcall = redis.call
local msg_key = KEYS[1]
local expire_s = tonumber(ARGV[1])

local value = rcall('GET', msg_key)
if value == false then
  rcall('SET', msg_key, 'rollback', 'EX', expire_s)
  return 3
end
if value == 'rollback' then
  return 3
end
return 0
