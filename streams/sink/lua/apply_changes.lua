-- KEYS[1]: the partition owners hash (fence.lua). ARGV[1]:
--   {"fence": {partition: [epoch, seq]}, "after": {partition: [epoch, seq]},
--    "parts": {partition: {"rem": {board: [member...]}, "add": {board: [score, member, ...]},
--                          "del": [[hash, field...]...], "set": [[hash, field, value, ...]...]}}}
-- Each partition's changes are applied only if its owner check passes; returns the
-- partitions refused and those whose stamp was older than `after` (Redis lost writes). Removals first, as the boards of a moved account are left before
-- it joins others.
local changes = cjson.decode(ARGV[1])
local step = 4000
local function each_chunk(command, key, items)
  for i = 1, #items, step do
    redis.call(command, key, unpack(items, i, math.min(i + step - 1, #items)))
  end
end
local refused = {}
local behind = {}
local after = changes.after or {}
for partition, fence in pairs(changes.fence) do
  if lost_writes(KEYS[1], partition, after[partition]) then
    behind[#behind + 1] = tonumber(partition)
  end
  if not owned(KEYS[1], partition, fence) then refused[partition] = true end
end
for partition, part in pairs(changes.parts) do
  if not refused[partition] then
    for key, members in pairs(part.rem) do each_chunk('ZREM', key, members) end
    for key, scored in pairs(part.add) do each_chunk('ZADD', key, scored) end
    for _, fields in ipairs(part.del) do redis.call('HDEL', unpack(fields)) end
    for _, fields in ipairs(part.set) do redis.call('HSET', unpack(fields)) end
  end
end
local out = {}
for partition in pairs(refused) do out[#out + 1] = tonumber(partition) end
return {out, behind}
