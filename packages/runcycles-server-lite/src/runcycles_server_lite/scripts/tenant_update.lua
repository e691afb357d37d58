-- tenant_update.lua: PATCH a tenant record, enforcing the status machine
-- ACTIVE <-> SUSPENDED, any -> CLOSED (terminal).
--
-- KEYS[1] tenant hash
-- ARGV[1] now (epoch ms)   ARGV[2] requested status or ""   ARGV[3..] field, value pairs
-- Returns {"OK", previous_status, field1, value1, ...} or {"ERR", code, message}.

local now, want = ARGV[1], ARGV[2]
local cur = redis.call("HGET", KEYS[1], "status")
if not cur then return {"ERR", "TENANT_NOT_FOUND", "tenant not found"} end
if cur == "CLOSED" then
  -- Re-issuing a close is a no-op at the tenant level; anything else is a mutation of a
  -- terminal tenant.
  if want ~= "CLOSED" or #ARGV > 2 then
    return {"ERR", "TENANT_CLOSED", "tenant is closed"}
  end
else
  local fields = {}
  for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
  if want ~= "" and want ~= cur then
    fields[#fields + 1] = "status"
    fields[#fields + 1] = want
    if want == "SUSPENDED" then
      fields[#fields + 1] = "suspended_at"
      fields[#fields + 1] = now
    elseif want == "CLOSED" then
      fields[#fields + 1] = "closed_at"
      fields[#fields + 1] = now
    end
  end
  fields[#fields + 1] = "updated_at"
  fields[#fields + 1] = now
  redis.call("HSET", KEYS[1], unpack(fields))
  if want == "ACTIVE" and cur == "SUSPENDED" then redis.call("HDEL", KEYS[1], "suspended_at") end
end
local out = redis.call("HGETALL", KEYS[1])
table.insert(out, 1, cur)
table.insert(out, 1, "OK")
return out
