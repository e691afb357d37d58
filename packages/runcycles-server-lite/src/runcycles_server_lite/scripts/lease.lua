-- Take or keep a lease: the owner (ARGV[1] = token) renews it, anyone takes a free one.
-- KEYS: 1 lease key   ARGV: 1 owner token, 2 lease ms   Returns 1 if held by ARGV[1].
if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[2]))
  return 1
end
if redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", tonumber(ARGV[2])) then return 1 end
return 0
