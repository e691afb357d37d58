-- Shared helpers, prepended to every script (see store.py).
--
-- Amounts are signed int64 decimal strings end to end: Lua numbers are doubles (exact only
-- to 2^53) and cjson keeps 14 digits, so no amount ever becomes a Lua or cjson number.
-- Scripts validate and compute every new value first (with the exact string arithmetic below,
-- including int64 headroom), and only then write, so a script never fails halfway.
-- HINCRBY would re-check the arithmetic but costs one command per field; the exact values are
-- already known, so each budget is written with a single HSET.
--
-- Return convention (parsed by runtime.py):
--   {"OK", "<http status>", "<json body>"}
--   {"ERR", "<error code>", "<message>", "<details json or empty>"}
-- JSON bodies are built by concatenation. Strings inserted raw are either produced by
-- Python's JSON encoder (passed in ARGV) or come from closed character sets (scope paths,
-- units, ids, digits), so no escaping is needed here.

local INT64_MAX = "9223372036854775807"
local INT64_MIN_MAG = "9223372036854775808"

-- Parse a signed decimal string into (negative, magnitude without leading zeros).
local function dparse(s)
  if type(s) ~= "string" then return nil end
  local neg = false
  local d = s
  if string.sub(s, 1, 1) == "-" then
    neg = true
    d = string.sub(s, 2)
  end
  if d == "" or #d > 40 or not string.match(d, "^%d+$") then return nil end
  d = (string.gsub(d, "^0+", ""))
  if d == "" then return false, "0" end
  return neg, d
end

local function ucmp(a, b)
  if #a ~= #b then return (#a < #b) and -1 or 1 end
  if a == b then return 0 end
  return (a < b) and -1 or 1
end

local function uadd(a, b)
  local out = {}
  local i, j, carry = #a, #b, 0
  while i > 0 or j > 0 or carry > 0 do
    local da = (i > 0) and (string.byte(a, i) - 48) or 0
    local db = (j > 0) and (string.byte(b, j) - 48) or 0
    local s = da + db + carry
    carry = (s >= 10) and 1 or 0
    out[#out + 1] = string.char(48 + s % 10)
    i = i - 1
    j = j - 1
  end
  local r = string.reverse(table.concat(out))
  return (r == "") and "0" or r
end

-- a - b for magnitudes with a >= b.
local function usub(a, b)
  local out = {}
  local i, j, borrow = #a, #b, 0
  while i > 0 do
    local da = string.byte(a, i) - 48 - borrow
    local db = (j > 0) and (string.byte(b, j) - 48) or 0
    if da < db then
      da = da + 10
      borrow = 1
    else
      borrow = 0
    end
    out[#out + 1] = string.char(48 + da - db)
    i = i - 1
    j = j - 1
  end
  local r = (string.gsub(string.reverse(table.concat(out)), "^0+", ""))
  return (r == "") and "0" or r
end

-- Fast path: decimals of at most 15 characters are exact as Lua numbers (|x| < 10^15 <
-- 2^53), and so are sums and differences of two of them. Longer values take the digit path.
local function small(s) return #s <= 15 and string.match(s, "^-?%d+$") ~= nil end
local function nfmt(n) return string.format("%d", n) end

local function dfmt(neg, mag)
  if neg and mag ~= "0" then return "-" .. mag end
  return mag
end

-- Normalised form of a decimal string ("007" -> "7", "-0" -> "0"); nil if malformed.
local function dnorm(s)
  if type(s) == "string" and small(s) then return nfmt(tonumber(s)) end
  local n, m = dparse(s)
  if n == nil then return nil end
  return dfmt(n, m)
end

local function dadd(x, y)
  if small(x) and small(y) then return nfmt(tonumber(x) + tonumber(y)) end
  local xn, xm = dparse(x)
  local yn, ym = dparse(y)
  if xn == yn then return dfmt(xn, uadd(xm, ym)) end
  local c = ucmp(xm, ym)
  if c == 0 then return "0" end
  if c > 0 then return dfmt(xn, usub(xm, ym)) end
  return dfmt(yn, usub(ym, xm))
end

local function dneg(x)
  if small(x) then return nfmt(-tonumber(x)) end
  local n, m = dparse(x)
  return dfmt(not n, m)
end

local function dsub(x, y) return dadd(x, dneg(y)) end

local function dcmp(x, y)
  if small(x) and small(y) then
    local a, b = tonumber(x), tonumber(y)
    if a == b then return 0 end
    return (a < b) and -1 or 1
  end
  local xn, xm = dparse(x)
  local yn, ym = dparse(y)
  if xm == "0" then xn = false end
  if ym == "0" then yn = false end
  if xn ~= yn then return xn and -1 or 1 end
  local c = ucmp(xm, ym)
  if xn then return -c end
  return c
end

local function dmin(x, y) if dcmp(x, y) <= 0 then return x end return y end
local function dmax0(x) if dcmp(x, "0") < 0 then return "0" end return x end

-- True if s is a well-formed decimal inside the signed int64 range.
local function fits64(s)
  if type(s) == "string" and small(s) then return true end
  local n, m = dparse(s)
  if n == nil then return false end
  if n then return ucmp(m, INT64_MIN_MAG) <= 0 end
  return ucmp(m, INT64_MAX) <= 0
end

local function is_amount(s)
  local n = dparse(s)
  return n == false and fits64(s)
end

-- Redis TIME in epoch milliseconds (the only clock). Safe as a Lua number (< 2^53).
local function now_ms()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function ok(status, body) return {"OK", tostring(status), body} end
local function err(code, message, details) return {"ERR", code, message, details or ""} end

-- Integer (ms, counts) as a decimal string without exponent or ".0".
local function istr(n) return string.format("%d", n) end

local function jstr(s) return '"' .. s .. '"' end

local function amount_json(unit, amount)
  return '{"unit":"' .. unit .. '","amount":' .. amount .. '}'
end

local function split_lines(s)
  local out = {}
  if s == nil or s == "" then return out end
  for line in string.gmatch(s, "[^\n]+") do out[#out + 1] = line end
  return out
end

local function json_array(strs)
  local parts = {}
  for i = 1, #strs do parts[i] = jstr(strs[i]) end
  return "[" .. table.concat(parts, ",") .. "]"
end

-- Tenant record guard and settings. Returns (settings table) or (nil, err reply).
-- No record means no governance plane: no guard, defaults apply.
local EVT = {thresholds = nil}

local function tenant_settings(key)
  local f = redis.call("HMGET", key, "status", "default_commit_overage_policy",
    "default_reservation_ttl_ms", "max_reservation_ttl_ms", "max_reservation_extensions",
    "tenant_id", "event_thresholds")
  local t = {exists = false, closed = false}
  EVT.thresholds = f[7] or false
  if not f[1] and not f[6] then return t end
  t.exists = true
  local status = f[1]
  if status == "CLOSED" then
    t.closed = true
  elseif status ~= "ACTIVE" and status ~= "SUSPENDED" then
    return nil, err("INTERNAL_ERROR", "tenant record has an unreadable status")
  end
  t.policy = f[2] or false
  t.default_ttl = tonumber(f[3] or "")
  t.max_ttl = tonumber(f[4] or "")
  t.max_ext = tonumber(f[5] or "")
  return t
end

local BUDGET_READ = {"status", "allocated", "remaining", "reserved", "spent", "debt",
  "overdraft_limit", "is_over_limit", "caps_json", "unit"}

-- Read one budget hash; nil if it does not exist; (nil, err) if corrupt.
-- A reservation's own checks, in the reference's order: it exists, then it is the caller's.
local function owned(status, owner, caller)
  if not status then return err("NOT_FOUND", "reservation not found") end
  if owner ~= caller then return err("FORBIDDEN", "reservation belongs to another tenant") end
  return nil
end

local function mismatch()
  return err("IDEMPOTENCY_MISMATCH", "idempotency_key was already used with a different request")
end

-- The gates every change to a reservation passes after its replay check, in the reference's
-- order: tenant closed (or malformed), then expired, then any other finalized state.
local function active_gate(tenant_key, status)
  local tenant, terr = tenant_settings(tenant_key)
  if not tenant then return terr end
  if tenant.closed then return err("TENANT_CLOSED", "tenant is closed") end
  if status == "EXPIRED" then return err("RESERVATION_EXPIRED", "reservation has expired") end
  if status ~= "ACTIVE" then
    return err("RESERVATION_FINALIZED", "reservation is already " .. string.lower(status))
  end
  return nil
end

local function read_budget(key)
  local f = redis.call("HMGET", key, unpack(BUDGET_READ))
  if not f[1] and not f[3] and not f[6] and not f[8] then return nil end
  local b = {
    key = key,
    status = f[1] or "ACTIVE",
    allocated = f[2] or "0",
    remaining = f[3] or "0",
    reserved = f[4] or "0",
    spent = f[5] or "0",
    debt = f[6] or "0",
    overdraft_limit = f[7] or "0",
    over = (f[8] == "true"),
    caps = f[9],
  }
  for _, k in ipairs({"allocated", "remaining", "reserved", "spent", "debt", "overdraft_limit"}) do
    local v = dnorm(b[k])
    if v == nil or not fits64(v) then return nil, err("INTERNAL_ERROR", "budget " .. key .. " has a malformed " .. k) end
    b[k] = v
  end
  return b
end

-- The first refusal for a new reservation on one budget, in the protocol's order.
local function reserve_refusal(b, estimate)
  if b.status == "FROZEN" then return "BUDGET_FROZEN" end
  if b.status == "CLOSED" then return "BUDGET_CLOSED" end
  if b.over then return "OVERDRAFT_LIMIT_EXCEEDED" end
  if dcmp(b.debt, "0") > 0 and dcmp(b.overdraft_limit, "0") == 0 then return "DEBT_OUTSTANDING" end
  if dcmp(b.remaining, estimate) < 0 then return "BUDGET_EXCEEDED" end
  return nil
end

local REFUSAL_MESSAGE = {
  BUDGET_FROZEN = "budget is frozen",
  BUDGET_CLOSED = "budget is closed",
  OVERDRAFT_LIMIT_EXCEEDED = "budget is over its overdraft limit",
  DEBT_OUTSTANDING = "budget has outstanding debt",
  BUDGET_EXCEEDED = "insufficient remaining budget",
}

-- Apply new values (already computed exactly and checked by check_headroom) to a budget,
-- in one HSET: the arithmetic was done on decimal strings, so no Lua number ever carries an
-- amount, and one command per budget keeps scripts short.
local function write_budget(b, nv, now)
  if not b.prev then
    b.prev = {remaining = b.remaining, reserved = b.reserved, spent = b.spent, debt = b.debt,
      over = b.over}
  end
  local args = {b.key}
  for _, k in ipairs({"remaining", "reserved", "spent", "debt"}) do
    if nv[k] ~= nil and nv[k] ~= b[k] then
      args[#args + 1] = k
      args[#args + 1] = nv[k]
      b[k] = nv[k]
    end
  end
  if nv.over ~= nil and nv.over ~= b.over then
    args[#args + 1] = "is_over_limit"
    args[#args + 1] = nv.over and "true" or "false"
    b.over = nv.over
  end
  args[#args + 1] = "updated_at"
  args[#args + 1] = istr(now)
  redis.call("HSET", unpack(args))
end

-- Every value in nv must stay a valid int64 (and non-negative except remaining).
local function check_headroom(nv)
  for k, v in pairs(nv) do
    if k ~= "over" then
      if v == nil or not fits64(v) then return false end
      if k ~= "remaining" and dcmp(v, "0") < 0 then return false end
    end
  end
  return true
end

local function balance_json(b, scope, unit)
  local function a(v) return amount_json(unit, v) end
  return '{"scope":' .. jstr(scope) .. ',"scope_path":' .. jstr(scope) ..
    ',"remaining":' .. a(b.remaining) .. ',"reserved":' .. a(b.reserved) ..
    ',"spent":' .. a(b.spent) .. ',"allocated":' .. a(b.allocated) ..
    ',"debt":' .. a(b.debt) .. ',"overdraft_limit":' .. a(b.overdraft_limit) ..
    ',"is_over_limit":' .. (b.over and "true" or "false") .. '}'
end

local function balances_json(budgets, scopes, unit)
  local parts = {}
  for i = 1, #budgets do parts[i] = balance_json(budgets[i], scopes[i], unit) end
  return "[" .. table.concat(parts, ",") .. "]"
end

-- Overage settlement shared by commit (base = reserved estimate) and events (base = 0).
-- Returns (plan, charged_extra) or (nil, error code). plan[i] = new values for budgets[i].
-- delta > 0 is the amount beyond the reservation that has to be charged.
local function settle_overage(budgets, delta, policy)
  local n = #budgets
  if dcmp(delta, "0") <= 0 then return {}, "0" end
  local all_cover = true
  for i = 1, n do
    if dcmp(budgets[i].remaining, delta) < 0 then all_cover = false end
  end
  local plan = {}
  if all_cover then
    for i = 1, n do
      local b = budgets[i]
      plan[i] = {remaining = dsub(b.remaining, delta), spent = dadd(b.spent, delta)}
    end
    return plan, delta
  end
  if policy == "REJECT" then return nil, "BUDGET_EXCEEDED" end
  if policy == "ALLOW_WITH_OVERDRAFT" then
    -- Zero-limit scopes that cannot cover the delta cap it, as ALLOW_IF_AVAILABLE would.
    local capped = delta
    for i = 1, n do
      local b = budgets[i]
      if dcmp(b.overdraft_limit, "0") == 0 and dcmp(b.remaining, delta) < 0 then
        capped = dmin(capped, dmax0(b.remaining))
      end
    end
    for i = 1, n do
      local b = budgets[i]
      if dcmp(b.overdraft_limit, "0") > 0 and dcmp(b.remaining, capped) < 0 then
        local deficit = dsub(capped, dmax0(b.remaining))
        if dcmp(dadd(b.debt, deficit), b.overdraft_limit) > 0 then
          return nil, "OVERDRAFT_LIMIT_EXCEEDED"
        end
      end
    end
    for i = 1, n do
      local b = budgets[i]
      local p = {remaining = dsub(b.remaining, capped)}
      if dcmp(b.remaining, capped) >= 0 then
        p.spent = dadd(b.spent, capped)
      else
        local funded = dmax0(b.remaining)
        p.spent = dadd(b.spent, funded)
        p.debt = dadd(b.debt, dsub(capped, funded))
        if dcmp(p.debt, b.overdraft_limit) > 0 then p.over = true end
      end
      if dcmp(b.overdraft_limit, "0") == 0 and dcmp(b.remaining, delta) < 0 then p.over = true end
      plan[i] = p
    end
    return plan, capped
  end
  -- ALLOW_IF_AVAILABLE: charge what every scope can cover; never debt, never refuse.
  local capped = delta
  for i = 1, n do capped = dmin(capped, dmax0(budgets[i].remaining)) end
  for i = 1, n do
    local b = budgets[i]
    plan[i] = {remaining = dsub(b.remaining, capped), spent = dadd(b.spent, capped)}
    if dcmp(b.remaining, delta) < 0 then plan[i].over = true end
  end
  return plan, capped
end

-- When no derived scope has a budget in `unit`: UNIT_MISMATCH if some scope is budgeted in
-- another unit (the budgets index ZSET holds "<scope>|<UNIT>"), else nil.
local function unit_probe(zkey, scopes, unit, units_csv)
  for i = 1, #scopes do
    local found = {}
    for u in string.gmatch(units_csv, "[^,]+") do
      if u ~= unit and redis.call("ZSCORE", zkey, scopes[i] .. "|" .. u) then
        found[#found + 1] = u
      end
    end
    if #found > 0 then
      return err("UNIT_MISMATCH", "no budget in " .. unit .. " for the derived scopes; " ..
        scopes[i] .. " is budgeted in " .. table.concat(found, ", "),
        '{"scope":' .. jstr(scopes[i]) .. ',"requested_unit":"' .. unit ..
        '","expected_units":' .. json_array(found) .. '}')
    end
  end
  return nil
end

-- Reads the budgets of the derived scopes (KEYS[first + i]) and applies the reservation
-- checks tenant -> leaf. Returns a table {budgets, scopes, leaf, refusal, refusal_scope}
-- or (nil, err) for a corrupt budget.
local function evaluate(first, scopes, estimate, check)
  local r = {budgets = {}, scopes = {}, leaf = nil}
  for i = 1, #scopes do
    local b, berr = read_budget(KEYS[first + i])
    if berr then return nil, berr end
    if b then
      r.budgets[#r.budgets + 1] = b
      r.scopes[#r.scopes + 1] = scopes[i]
      if i == #scopes then r.leaf = b end
      local refusal = check(b, estimate)
      if refusal and not r.refusal then
        r.refusal = refusal
        r.refusal_scope = scopes[i]
        r.refusal_budget = b
      end
    end
  end
  return r
end

local function leaf_caps(r)
  local c = r.leaf and r.leaf.caps
  if c and c ~= "" and c ~= "{}" and c ~= "null" then return c end
  return nil
end

-- details carry the refusing scope and, given the request's amount and unit, the scope's
-- remaining and the requested amount as integers (the server turns them into the message).
local function refusal_error(r, requested, unit)
  local details = '{"scope":' .. jstr(r.refusal_scope)
  if requested and unit then
    details = details .. ',"unit":"' .. unit .. '","requested":' .. requested ..
      ',"remaining":' .. r.refusal_budget.remaining
  end
  return err(r.refusal, REFUSAL_MESSAGE[r.refusal] .. ": " .. r.refusal_scope, details .. '}')
end

-- Budgets recorded on a reservation (key names written from KEYS at reserve time, all in
-- the tenant's slot). Missing budgets (deleted by an operator) are skipped.
local function recorded_budgets(keys_str, scopes_str)
  local keys, scopes = split_lines(keys_str), split_lines(scopes_str)
  if #keys ~= #scopes then return nil, nil, "MALFORMED_SCOPES" end
  local budgets, bscopes = {}, {}
  for i = 1, #keys do
    local b, berr = read_budget(keys[i])
    if berr then return nil, nil, "MALFORMED_BUDGET" end
    if b then
      budgets[#budgets + 1] = b
      bscopes[#bscopes + 1] = scopes[i]
    end
  end
  return budgets, bscopes
end

-- Governance events (the admin spec's Event envelope), written by the same script as the
-- mutation that causes them, into the tenant's stream. Scripts that emit pass the stream as
-- their LAST key and the envelope context as their LAST argument: a JSON fragment rendered
-- by events.py ("tenant_id", "source", "actor", "request_id", "trace_id"). event_id and
-- timestamp are not stored: both are derived from the stream entry id when read.

local function emit(event_type, scope, data, correlation)
  local category = string.match(event_type, "^([a-z_]+)%.")
  local body = '{"event_type":"' .. event_type .. '","category":"' .. category .. '"'
  if scope and scope ~= "" then body = body .. ',"scope":' .. jstr(scope) end
  if correlation and correlation ~= "" then body = body .. ',"correlation_id":' .. jstr(correlation) end
  body = body .. ',' .. ARGV[#ARGV]
  if data then body = body .. ',"data":' .. data end
  return redis.call("XADD", KEYS[#KEYS], "*", "e", body .. '}')
end

-- Epoch ms as ISO-8601 UTC (days-to-civil; Redis Lua has no os.date).
local function iso_ms(ms)
  local s = math.floor(ms / 1000)
  local days = math.floor(s / 86400)
  local rem = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp + 3
  if m > 12 then m = m - 12 end
  if m <= 2 then y = y + 1 end
  return string.format("%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", y, m, d, math.floor(rem / 3600),
    math.floor(rem / 60) % 60, rem % 60, ms % 1000)
end

local function num_json(x) return string.format("%.6g", x) end

-- (spent + reserved) / allocated as a ratio (a double is exact enough for a ratio).
local function utilization(allocated, spent, reserved)
  local a = tonumber(allocated)
  if not a or a <= 0 then return nil end
  return (tonumber(spent) + tonumber(reserved)) / a
end

local DEFAULT_THRESHOLDS = {0.8, 0.95, 1.0}

local function thresholds()
  if not EVT.thresholds or EVT.thresholds == "" then return DEFAULT_THRESHOLDS end
  local out = {}
  for v in string.gmatch(EVT.thresholds, "[^,]+") do out[#out + 1] = tonumber(v) end
  return out
end

local function threshold_json(b, scope, unit, threshold, util, direction)
  return '{"scope":' .. jstr(scope) .. ',"unit":"' .. unit .. '","threshold":' ..
    num_json(threshold) .. ',"utilization":' .. num_json(util) .. ',"allocated":' ..
    b.allocated .. ',"remaining":' .. b.remaining .. ',"spent":' .. b.spent ..
    ',"reserved":' .. b.reserved .. ',"direction":"' .. direction .. '"}'
end

local function over_limit_json(b, scope, unit)
  local limit = tonumber(b.overdraft_limit) or 0
  local body = '{"scope":' .. jstr(scope) .. ',"unit":"' .. unit .. '","debt":' .. b.debt ..
    ',"overdraft_limit":' .. b.overdraft_limit .. ',"is_over_limit":' ..
    (b.over and "true" or "false")
  if limit > 0 then body = body .. ',"debt_utilization":' .. num_json(tonumber(b.debt) / limit) end
  return body .. '}'
end

-- Transition events of the budgets written by this script (write_budget kept each one's
-- previous values): thresholds crossed either way, exhaustion, over-limit entered/exited,
-- new debt. `cause` = {reservation_id, policy, correlation} (all optional).
local function budget_events(budgets, scopes, unit, cause)
  cause = cause or {}
  for i = 1, #budgets do
    local b, p = budgets[i], budgets[i].prev
    if p then
      local scope = scopes[i]
      local u0 = utilization(b.allocated, p.spent, p.reserved)
      local u1 = utilization(b.allocated, b.spent, b.reserved)
      if u0 and u1 and u0 ~= u1 then
        for _, t in ipairs(thresholds()) do
          local dir = nil
          if u0 < t and u1 >= t then dir = "rising" elseif u0 >= t and u1 < t then dir = "falling" end
          if dir then
            emit("budget.threshold_crossed", scope, threshold_json(b, scope, unit, t, u1, dir),
              cause.correlation)
          end
        end
      end
      if dcmp(p.remaining, "0") > 0 and dcmp(b.remaining, "0") <= 0 then
        emit("budget.exhausted", scope,
          threshold_json(b, scope, unit, 1.0, u1 or 1.0, "rising"), cause.correlation)
      end
      if p.over ~= b.over then
        emit(b.over and "budget.over_limit_entered" or "budget.over_limit_exited", scope,
          over_limit_json(b, scope, unit), cause.correlation)
      end
      if dcmp(b.debt, p.debt) > 0 then
        local data = '{"scope":' .. jstr(scope) .. ',"unit":"' .. unit .. '","debt_incurred":' ..
          dsub(b.debt, p.debt) .. ',"total_debt":' .. b.debt .. ',"overdraft_limit":' ..
          b.overdraft_limit
        if cause.reservation_id then data = data .. ',"reservation_id":' .. jstr(cause.reservation_id) end
        if cause.policy then data = data .. ',"overage_policy":"' .. cause.policy .. '"' end
        emit("budget.debt_incurred", scope, data .. '}', cause.correlation)
      end
      b.prev = nil
    end
  end
end

-- Finalized reservations -------------------------------------------------------------------
--
-- An ACTIVE reservation is a hash (res:<id>, fields named as in reserve.lua). Finalizing it
-- (commit, release, expiry) replaces the hash with one compact STRING (fin:<id>): the FIN
-- fields below, newline-separated, in this order. Only what GET/list render and what replays
-- need is kept; the stored responses are not kept as JSON but re-rendered from their numbers
-- (compact balances), so the bytes are identical. A string costs far less than a hash whose
-- values outgrow the listpack limit (hash-max-listpack-value, 64 bytes by default), and the
-- record no longer depends on that setting. runtime.py decodes the same layout.
-- JSON fields (subject, action, metadata, caps) never hold a raw newline (the encoder escapes
-- it); client strings (idempotency keys, release reason) are escaped with esc().
local FIN = {"v", "status", "idempotency_key", "subject_json", "action_json", "metadata_json",
  "unit", "estimate", "scope_path", "created_at", "expires_at", "finalized_at", "charged",
  "committed_metadata_json", "settle_key", "settle_hash", "settle_bal", "release_reason",
  "released_by", "rexp", "rbal", "caps_json"}
-- The active hash fields a finalized record is built from.
local FIN_FROM_ACTIVE = {"idempotency_key", "subject_json", "action_json", "metadata_json",
  "unit", "estimate", "scope_path", "created_at", "expires_at", "rexp", "rbal", "caps_json"}

-- Payload hashes kept by reservation records are cut to their first 128 bits ("v1:" + 32
-- hex): plenty to tell two payloads apart, and 32 bytes less per stored copy.
local function short_hash(h) return string.sub(h, 1, 35) end

local function esc(s)
  return (string.gsub(s or "", "[\\\n]", {["\\"] = "\\\\", ["\n"] = "\\n"}))
end

-- Fields of s split on "\n", empty fields kept.
local function split_fields(s)
  local out, start = {}, 1
  while true do
    local i = string.find(s, "\n", start, true)
    if not i then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end

-- Key names next to a reservation key (same tenant tag, so the same Cluster slot).
local function tag_of(res_key) return string.match(res_key, "^(.*):res:[^:]*$") end
local function fin_key_of(res_key) return tag_of(res_key) .. ":fin:" .. string.match(res_key, ":res:([^:]*)$") end
local function reserve_idem_key(res_key, idem_key) return tag_of(res_key) .. ":idem:reserve:" .. idem_key end

-- The finalized record at fin_key as a table by FIN name; nil if there is none.
local function load_fin(fin_key)
  local blob = redis.call("GET", fin_key)
  if not blob then return nil end
  local parts = split_fields(blob)
  local r = {}
  for i, name in ipairs(FIN) do r[name] = parts[i] or "" end
  return r
end

-- The derived scopes (tenant -> leaf) of a scope path: its cumulative segments.
local function path_scopes(scope_path)
  local out, acc = {}, nil
  for seg in string.gmatch(scope_path, "[^/]+") do
    acc = acc and (acc .. "/" .. seg) or seg
    out[#out + 1] = acc
  end
  return out
end

-- Balances as numbers only: "<index in scopes>:remaining:reserved:spent:allocated:debt:
-- overdraft_limit:over(0|1)" per budget, ";"-separated; a balance names its scope by its
-- position among the derived scopes of the reservation's scope path.
local function bal_compact(budgets, bscopes, scope_path)
  local scopes = path_scopes(scope_path)
  local pos = {}
  for i = 1, #scopes do pos[scopes[i]] = i end
  local parts = {}
  for i = 1, #budgets do
    local b = budgets[i]
    parts[i] = istr(pos[bscopes[i]] or 0) .. ":" .. b.remaining .. ":" .. b.reserved .. ":" ..
      b.spent .. ":" .. b.allocated .. ":" .. b.debt .. ":" .. b.overdraft_limit .. ":" ..
      (b.over and "1" or "0")
  end
  return table.concat(parts, ";")
end

-- The balances JSON array bal_compact() stood for (byte for byte what balances_json gave).
local function bal_render(compact, scope_path, unit)
  local scopes = path_scopes(scope_path)
  local parts = {}
  for entry in string.gmatch(compact or "", "[^;]+") do
    local i, rem, res, spent, alloc, debt, od, over =
      string.match(entry, "^(%d+):([^:]*):([^:]*):([^:]*):([^:]*):([^:]*):([^:]*):([01])$")
    local b = {remaining = rem, reserved = res, spent = spent, allocated = alloc, debt = debt,
      overdraft_limit = od, over = (over == "1")}
    parts[#parts + 1] = balance_json(b, scopes[tonumber(i)] or "", unit)
  end
  return "[" .. table.concat(parts, ",") .. "]"
end

-- The reserve response (one renderer for the first reply and every replay).
local function reserve_reply(rid, unit, estimate, rexp, rttl, scope_path, rbal, caps)
  local has_caps = caps and caps ~= ""
  local body = '{"decision":"' .. (has_caps and "ALLOW_WITH_CAPS" or "ALLOW") ..
    '","reservation_id":"' .. rid .. '","reserved":' .. amount_json(unit, estimate) ..
    ',"expires_at_ms":' .. rexp .. ',"remaining_ttl_ms":' .. istr(rttl) ..
    ',"scope_path":' .. jstr(scope_path) .. ',"affected_scopes":' ..
    json_array(path_scopes(scope_path)) .. ',"balances":' .. bal_render(rbal, scope_path, unit)
  if has_caps then body = body .. ',"caps":' .. caps end
  return body .. '}'
end

-- The commit / release response.
local function settle_reply(status, unit, estimate, charged, balances)
  if status == "COMMITTED" then
    local body = '{"status":"COMMITTED","charged":' .. amount_json(unit, charged)
    if dcmp(charged, estimate) < 0 then
      body = body .. ',"released":' .. amount_json(unit, dsub(estimate, charged))
    end
    return body .. ',"balances":' .. balances .. '}'
  end
  return '{"status":"RELEASED","released":' .. amount_json(unit, estimate) .. ',"balances":' ..
    balances .. '}'
end

-- Replace the ACTIVE hash at res_key by its finalized record (kept retention_ms), and keep
-- the reserve idempotency record idem_ms from now. `s` = the settlement's own fields
-- (status, finalized_at, charged, committed_metadata_json, settle_key, settle_hash,
-- settle_bal, release_reason, released_by), all strings.
local function finalize(res_key, s, retention_ms, idem_ms)
  local f = redis.call("HMGET", res_key, unpack(FIN_FROM_ACTIVE))
  local r = {v = "1"}
  for i, name in ipairs(FIN_FROM_ACTIVE) do r[name] = f[i] or "" end
  r.idempotency_key = esc(r.idempotency_key)
  if r.rexp == "" then r.rexp = r.expires_at end  -- reserved by an older server-lite
  for k, v in pairs(s) do r[k] = v end
  local parts = {}
  for i, name in ipairs(FIN) do parts[i] = r[name] or "" end
  redis.call("SET", fin_key_of(res_key), table.concat(parts, "\n"), "PX", retention_ms)
  redis.call("DEL", res_key)
  if f[1] then redis.call("PEXPIRE", reserve_idem_key(res_key, f[1]), idem_ms) end
end

-- A commit/release replay. `marker` is the per-(tenant, endpoint, key) record: it says the
-- key settled some reservation, so reusing it on another one is a mismatch. The settled
-- reservation itself keeps its key, payload hash and response (render() builds it).
local function settle_replay(marker, req_hash, status, done_status, stored_key, req_key,
                             stored_hash, render)
  if status == done_status and stored_key == req_key then
    if stored_hash ~= short_hash(req_hash) then return mismatch() end
    return ok(200, render())
  end
  if marker then return mismatch() end
  return nil
end

-- A commit/release replay on a reservation an older server-lite finalized (its hash kept the
-- key, the payload hash and the whole response); nil if not one.
local function legacy_replay(res_key, status, done_status, prefix, req_key, req_hash)
  if status == "ACTIVE" then return nil end
  local f = redis.call("HMGET", res_key, prefix .. "_key", prefix .. "_hash", prefix .. "_body")
  if status == done_status and f[1] == req_key then
    if f[2] ~= req_hash then return mismatch() end
    return ok(200, f[3])
  end
  return nil
end
