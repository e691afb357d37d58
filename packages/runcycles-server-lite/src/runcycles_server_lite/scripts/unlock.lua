-- Compare-and-delete a lease: only its owner (ARGV[1] = owner token) may release it.
-- KEYS: 1 lease key
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
