-- budget_create.lua: create one budget ledger if its tenant is open and it does not exist.
--
-- KEYS[1] tenant hash   KEYS[2] budget hash   KEYS[3] tenant's budget index (ZSET)
-- KEYS[4] event stream
-- ARGV[1] index member "<scope>|<UNIT>"; ARGV[2..] field, value pairs of the new record;
-- last: event context (emits budget.created)
-- Returns {"OK"} or {"ERR", code, message}.

local tstatus = redis.call("HGET", KEYS[1], "status")
if not tstatus then return {"ERR", "TENANT_NOT_FOUND", "tenant not found"} end
if tstatus == "CLOSED" then return {"ERR", "TENANT_CLOSED", "tenant is closed"} end
if tstatus == "SUSPENDED" then return {"ERR", "TENANT_SUSPENDED", "tenant is suspended"} end
if redis.call("EXISTS", KEYS[2]) == 1 then
  return {"ERR", "DUPLICATE_RESOURCE", "a budget already exists for this (scope, unit)"}
end
local fields = {}
for i = 2, #ARGV - 1 do fields[#fields + 1] = ARGV[i] end
redis.call("HSET", KEYS[2], unpack(fields))
redis.call("ZADD", KEYS[3], 0, ARGV[1])
local r = {}
for i = 1, #fields, 2 do r[fields[i]] = fields[i + 1] end
emit("budget.created", r.scope, '{"ledger_id":' .. jstr(r.ledger_id) .. ',"scope":' ..
  jstr(r.scope) .. ',"unit":"' .. r.unit .. '","operation":"CREATE","new_state":{"allocated":' ..
  r.allocated .. ',"remaining":' .. r.remaining .. ',"debt":0,"spent":0,"reserved":0,' ..
  '"status":"ACTIVE"}}')
return {"OK"}
