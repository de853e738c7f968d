-- ARGV[1]: {"rem": {board: [member...]}, "add": {board: [score, member, ...]},
--           "del": [[hash, field...]...], "set": [[hash, field, value, ...]...]}
-- Removals first, as the boards of a moved account are left before it joins others.
local changes = cjson.decode(ARGV[1])
local step = 4000
local function each_chunk(command, key, items)
  for i = 1, #items, step do
    redis.call(command, key, unpack(items, i, math.min(i + step - 1, #items)))
  end
end
for key, members in pairs(changes.rem) do each_chunk('ZREM', key, members) end
for key, scored in pairs(changes.add) do each_chunk('ZADD', key, scored) end
for _, fields in ipairs(changes.del) do redis.call('HDEL', unpack(fields)) end
for _, fields in ipairs(changes.set) do redis.call('HSET', unpack(fields)) end
return #changes.set
