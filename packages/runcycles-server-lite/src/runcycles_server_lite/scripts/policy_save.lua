-- policy_save.lua: create or replace one policy record, keeping names unique per tenant.
--
-- KEYS[1] tenant hash   KEYS[2] policies hash   KEYS[3] policy-names hash   KEYS[4] events
-- ARGV[6] scope pattern or "", ARGV[7] event context (emits policy.created / policy.updated)
-- ARGV[1] "create" | "update"   ARGV[2] policy_id   ARGV[3] name   ARGV[4] record JSON
-- ARGV[5] previous name ("" on create)
-- Returns {"OK"} or {"ERR", code, message}. The JSON is stored as given, never decoded here.

local mode, id, name, json, old_name = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local tstatus = redis.call("HGET", KEYS[1], "status")
if not tstatus then return {"ERR", "TENANT_NOT_FOUND", "tenant not found"} end
if tstatus == "CLOSED" then return {"ERR", "TENANT_CLOSED", "tenant is closed"} end
local exists = redis.call("HEXISTS", KEYS[2], id) == 1
if mode == "create" and exists then
  return {"ERR", "DUPLICATE_RESOURCE", "policy id already exists"}
end
if mode == "update" and not exists then return {"ERR", "NOT_FOUND", "policy not found"} end
if name ~= old_name then
  local holder = redis.call("HGET", KEYS[3], name)
  if holder and holder ~= id then
    return {"ERR", "DUPLICATE_RESOURCE", "a policy with this name already exists"}
  end
  if old_name ~= "" then redis.call("HDEL", KEYS[3], old_name) end
  redis.call("HSET", KEYS[3], name, id)
end
redis.call("HSET", KEYS[2], id, json)
-- name and pattern are operator text: cjson escapes them.
local data = '{"policy_id":' .. cjson.encode(id) .. ',"name":' .. cjson.encode(name)
if ARGV[6] ~= "" then data = data .. ',"scope_pattern":' .. cjson.encode(ARGV[6]) end
emit(mode == "create" and "policy.created" or "policy.updated", nil, data .. '}')
return {"OK"}
