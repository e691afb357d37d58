-- tenant_create.lua: create a tenant record once.
--
-- KEYS[1] tenant hash   KEYS[2] event stream
-- ARGV field, value pairs of the new record; last: event context (emits tenant.created)
-- Returns {1} when created, or {0, field1, value1, ...} (the existing record).
-- The global tenant index is not touched here (it lives in another Cluster slot); the caller
-- adds the id to it afterwards, also on the "exists" path, which repairs an interrupted create.

if redis.call("EXISTS", KEYS[1]) == 1 then
  local out = redis.call("HGETALL", KEYS[1])
  table.insert(out, 1, 0)
  return out
end
local fields = {}
for i = 1, #ARGV - 1 do fields[i] = ARGV[i] end
redis.call("HSET", KEYS[1], unpack(fields))
local id = redis.call("HGET", KEYS[1], "tenant_id") or ""
emit("tenant.created", "tenant:" .. id, '{"tenant_id":' .. jstr(id) ..
  ',"new_status":"ACTIVE","changed_fields":[]}')
return {1}
