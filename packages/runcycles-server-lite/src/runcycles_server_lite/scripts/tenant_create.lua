-- tenant_create.lua: create a tenant record once.
--
-- KEYS[1] tenant hash
-- ARGV field, value pairs of the new record
-- Returns {1} when created, or {0, field1, value1, ...} (the existing record).
-- The global tenant index is not touched here (it lives in another Cluster slot); the caller
-- adds the id to it afterwards, also on the "exists" path, which repairs an interrupted create.

if redis.call("EXISTS", KEYS[1]) == 1 then
  local out = redis.call("HGETALL", KEYS[1])
  table.insert(out, 1, 0)
  return out
end
redis.call("HSET", KEYS[1], unpack(ARGV))
return {1}
