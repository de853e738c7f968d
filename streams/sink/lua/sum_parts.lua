-- KEYS[1]: per-partition parts hash, KEYS[2]: total hash, KEYS[3]: the partition owners
-- hash. ARGV[1]: partition, ARGV[2]: its owner epoch ('' when unstamped), then
-- field/value pairs. Unless the owner check refuses it (returns -1), sets the
-- partition's share and moves each total by the change of that share: a write reads its
-- own fields only, so a tick's writes do not grow with the square of the partitions.
-- Fields named "max:..." are combined by max, not sum. A total missing (its hash lost
-- while the shares stayed) or a max that may have fallen is summed again from every
-- share, so totals stay the sums of the shares whatever came before
-- (tests/integration/test_sum_parts.py).
local part = ARGV[1]
if ARGV[2] ~= '' then
  local held = tonumber(redis.call('HGET', KEYS[3], part .. '.epoch')) or -1
  if held > tonumber(ARGV[2]) then return -1 end
end

local function summed(field, is_max)
  local all = redis.call('HGETALL', KEYS[1])
  local total = nil
  for i = 1, #all, 2 do
    if string.match(all[i], '|(.*)$') == field then
      local v = tonumber(all[i + 1])
      if total == nil then total = v
      elseif is_max then total = math.max(total, v)
      else total = total + v end
    end
  end
  return total or 0
end

local whole = redis.call('EXISTS', KEYS[2]) == 1
local again = {}
for i = 3, #ARGV, 2 do
  local field, new = ARGV[i], tonumber(ARGV[i + 1])
  local share = part .. '|' .. field
  local old = tonumber(redis.call('HGET', KEYS[1], share))
  redis.call('HSET', KEYS[1], share, ARGV[i + 1])
  local is_max = string.sub(field, 1, 4) == 'max:'
  local name = is_max and string.sub(field, 5) or field
  local total = nil
  if whole then total = tonumber(redis.call('HGET', KEYS[2], name)) end
  if total == nil then
    again[name] = field
  elseif is_max then
    if new >= total then
      redis.call('HSET', KEYS[2], name, string.format('%.0f', new))
    elseif old ~= nil and old >= total then
      again[name] = field  -- the largest share fell: another may be the max now
    end
  elseif old ~= new then
    redis.call('HSET', KEYS[2], name, string.format('%.0f', total + new - (old or 0)))
  end
end
for name, field in pairs(again) do
  local total = summed(field, string.sub(field, 1, 4) == 'max:')
  redis.call('HSET', KEYS[2], name, string.format('%.0f', total))
end
return 0
