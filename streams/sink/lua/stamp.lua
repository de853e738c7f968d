-- KEYS[1]: a shard's stamps hash (streams/sink/cluster.py). ARGV[1]:
--   {"fence": {partition: [epoch, seq]}, "after": {partition: [epoch, seq]}}
-- Sent last to each shard in a write, so that a stamp found there vouches for every write
-- before it on that shard. Reports the partitions whose stamp is older than `after`
-- (the shard lost writes: a replica that missed them took over), then takes each stamp
-- unless the owner check refuses it; returns {refused, behind}
-- (tests/integration/test_redis_cluster.py).
local changes = cjson.decode(ARGV[1])
local refused = {}
local behind = {}
local after = changes.after or {}
for partition, fence in pairs(changes.fence) do
  if lost_writes(KEYS[1], partition, after[partition]) then
    behind[#behind + 1] = tonumber(partition)
  end
  if not owned(KEYS[1], partition, fence) then refused[#refused + 1] = tonumber(partition) end
end
return {refused, behind}
