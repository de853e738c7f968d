-- KEYS[1]: per-partition parts hash, KEYS[2]: total hash, KEYS[3]: the partition owners
-- hash. ARGV[1]: partition, ARGV[2]: its owner epoch ('' when unstamped), then
-- field/value pairs. Unless the owner check refuses it (returns -1), sets the
-- partition's share, then every total as the sum of all partitions' shares. Fields named
-- "max:..." are combined by max, not sum.
local part = ARGV[1]
if ARGV[2] ~= '' then
  local held = tonumber(redis.call('HGET', KEYS[3], part .. '.epoch')) or -1
  if held > tonumber(ARGV[2]) then return -1 end
end
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], part .. '|' .. ARGV[i], ARGV[i + 1])
end
local all = redis.call('HGETALL', KEYS[1])
local sums = {}
for i = 1, #all, 2 do
  local field = string.match(all[i], '|(.*)$')
  if field then
    local v = tonumber(all[i + 1])
    if string.sub(field, 1, 4) == 'max:' then
      field = string.sub(field, 5)
      if sums[field] == nil or v > sums[field] then sums[field] = v end
    else
      sums[field] = (sums[field] or 0) + v
    end
  end
end
for field, v in pairs(sums) do
  redis.call('HSET', KEYS[2], field, string.format('%.0f', v))
end
return #all
