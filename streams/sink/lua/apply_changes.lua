-- KEYS[1]: the partition owners hash (fence.lua), KEYS[2]: the campaigns registry set,
-- KEYS[3]: the data generation marker (read only for a write with "done" marks).
-- ARGV[1]:
--   {"fence": {partition: [epoch, seq]}, "after": {partition: [epoch, seq]},
--    "parts": {partition: {"rem": {board: [member...]}, "add": {board: [score, member, ...]},
--                          "del": [[hash, field...]...], "set": [[hash, field, value, ...]...],
--                          "sets": [[set, [member...], [member...]]...]}},
--    "campaigns": {campaign: [its board in every window...]},
--    "done": {partition: [epoch, seq, decayed]}, "generation": the writer's marker}
-- ("done": fence.lua's mark_done, on an update's last chunk; one Redis only)
-- A "sets" entry adds its first members to the set and removes its second (an account's
-- campaigns: each one it has is named, so the set ends as the account's, also when an
-- account in many campaigns is written in several chunks). Each campaign named is
-- then registered if one of its boards has a member, and unregistered if all are empty:
-- the registry follows the boards, so replays converge (tests/integration/test_hygiene.py).
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
local refused, behind = check_fences(KEYS[1], changes)
for partition, part in pairs(changes.parts) do
  if not refused[partition] then
    for key, members in pairs(part.rem) do each_chunk('ZREM', key, members) end
    for key, scored in pairs(part.add) do each_chunk('ZADD', key, scored) end
    for _, fields in ipairs(part.del) do redis.call('HDEL', unpack(fields)) end
    for _, fields in ipairs(part.set) do redis.call('HSET', unpack(fields)) end
    for _, change in ipairs(part.sets or {}) do
      each_chunk('SADD', change[1], change[2])
      each_chunk('SREM', change[1], change[3])
    end
  end
end
mark_done(KEYS[1], changes.done, refused, KEYS[3], changes.generation)
for campaign, boards in pairs(changes.campaigns or {}) do
  local standing = false
  for _, board in ipairs(boards) do
    if redis.call('ZCARD', board) > 0 then standing = true break end
  end
  if standing then redis.call('SADD', KEYS[2], campaign)
  else redis.call('SREM', KEYS[2], campaign) end
end
local out = {}
for partition in pairs(refused) do out[#out + 1] = tonumber(partition) end
return {out, behind}
