-- Extend an ACTIVE reservation's expiry (from its current expires_at; no grace for extend).
--
-- KEYS: 1 tenant, 2 reservation, 3 res:exp, 4 idempotency record (per reservation and key):
--       a string "<hash>\n<new expires_at>\n<compact balances>" (lib.lua), the response is
--       rendered again on replay; an older server-lite's hash kept it whole
-- ARGV: 1 caller tenant, 2 extend_by_ms, 3 payload hash, 4 metadata json or "",
--       5 idempotency ms (the record stays that long past the new expiry)

local f = redis.call("HMGET", KEYS[2], "status", "tenant", "expires_at", "grace_ms",
  "extension_count", "max_extensions", "unit", "budget_keys", "budget_scopes", "reservation_id", "scope_path")
local status = f[1]
if not status then
  local fin = load_fin(fin_key_of(KEYS[2]))
  if fin then
    status = fin.status
    f[2] = ARGV[1]
    f[7] = fin.unit
    f[11] = fin.scope_path
  end
end
local e = owned(status, f[2], ARGV[1])
if e then return e end

local function reply(new_expires, rttl, balances)
  return '{"status":"ACTIVE","expires_at_ms":' .. new_expires .. ',"remaining_ttl_ms":' ..
    istr(rttl) .. ',"balances":' .. balances .. '}'
end

local idem_type = redis.call("TYPE", KEYS[4]).ok
if idem_type == "hash" then
  local idem = redis.call("HMGET", KEYS[4], "hash", "body_a", "body_b", "expires_at")
  if idem[1] ~= ARGV[3] then return mismatch() end
  local rttl = 0
  if status == "ACTIVE" then rttl = math.max(0, tonumber(idem[4]) - now_ms()) end
  return ok(200, idem[2] .. istr(rttl) .. idem[3])
elseif idem_type == "string" then
  local hash, exp, bal = string.match(redis.call("GET", KEYS[4]), "^([^\n]*)\n([^\n]*)\n(.*)$")
  if hash ~= short_hash(ARGV[3]) then return mismatch() end
  local rttl = 0
  if status == "ACTIVE" then rttl = math.max(0, tonumber(exp) - now_ms()) end
  return ok(200, reply(exp, rttl, bal_render(bal, f[11] or "", f[7] or "")))
end

e = active_gate(KEYS[1], status)
if e then return e end
local expires_at = tonumber(f[3] or "")
local grace = tonumber(f[4] or "")
local count = tonumber(f[5] or "0") or 0
local max_ext = tonumber(f[6] or "10") or 10
if not expires_at or not grace then return err("INTERNAL_ERROR", "reservation record is malformed") end
local now = now_ms()
if now > expires_at then return err("RESERVATION_EXPIRED", "reservation has expired") end
if count >= max_ext then
  return err("MAX_EXTENSIONS_EXCEEDED", "reservation was already extended " .. istr(count) ..
    " times (limit " .. istr(max_ext) .. ")")
end
local new_expires = expires_at + tonumber(ARGV[2])

local budgets, bscopes, berr = recorded_budgets(f[8], f[9])
if not budgets then return err("INTERNAL_ERROR", "reservation budgets are malformed: " .. berr) end

redis.call("HSET", KEYS[2], "expires_at", istr(new_expires), "extend_metadata_json", ARGV[4])
redis.call("HINCRBY", KEYS[2], "extension_count", 1)
redis.call("ZADD", KEYS[3], new_expires + grace, f[10])

redis.call("SET", KEYS[4], short_hash(ARGV[3]) .. "\n" .. istr(new_expires) .. "\n" ..
  bal_compact(budgets, bscopes, f[11] or ""), "PX", tonumber(ARGV[5]) + (new_expires - now) + grace)
return ok(200, reply(istr(new_expires), new_expires - now, balances_json(budgets, bscopes, f[7])))
