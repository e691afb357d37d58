-- tenant_update.lua: PATCH a tenant record, enforcing the status machine
-- ACTIVE <-> SUSPENDED, any -> CLOSED (terminal).
--
-- KEYS[1] tenant hash   KEYS[2] event stream
-- ARGV[1] now (epoch ms)   ARGV[2] requested status or ""   ARGV[3..] field, value pairs
-- last ARGV: event context (tenant.suspended / reactivated / closed on a status change,
--            tenant.settings_changed for default policy / TTL fields, else tenant.updated)
-- Returns {"OK", previous_status, field1, value1, ...} or {"ERR", code, message}.

local now, want = ARGV[1], ARGV[2]
local cur = redis.call("HGET", KEYS[1], "status")
if not cur then return {"ERR", "TENANT_NOT_FOUND", "tenant not found"} end
if cur == "CLOSED" then
  -- Re-issuing a close is a no-op at the tenant level; anything else is a mutation of a
  -- terminal tenant.
  if want ~= "CLOSED" or #ARGV > 3 then
    return {"ERR", "TENANT_CLOSED", "tenant is closed"}
  end
else
  local fields = {}
  local changed = {}
  local settings = false
  for i = 3, #ARGV - 1 do fields[#fields + 1] = ARGV[i] end
  for i = 1, #fields, 2 do
    local name = string.gsub(fields[i], "_json$", "")
    changed[#changed + 1] = name
    if string.match(name, "^default_") or string.match(name, "^max_") or name == "reservation_expiry_policy" then
      settings = true
    end
  end
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
  local id = redis.call("HGET", KEYS[1], "tenant_id") or ""
  local new = (want ~= "" and want) or cur
  local data = '{"tenant_id":' .. jstr(id) .. ',"previous_status":"' .. cur ..
    '","new_status":"' .. new .. '","changed_fields":' .. json_array(changed) .. '}'
  if new ~= cur then
    local kind = ({SUSPENDED = "tenant.suspended", ACTIVE = "tenant.reactivated",
      CLOSED = "tenant.closed"})[new]
    emit(kind, "tenant:" .. id, data)
  end
  if #changed > 0 then
    emit(settings and "tenant.settings_changed" or "tenant.updated", "tenant:" .. id, data)
  end
end
local out = redis.call("HGETALL", KEYS[1])
table.insert(out, 1, cur)
table.insert(out, 1, "OK")
return out
