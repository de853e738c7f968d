-- KEYS[1]: a shard's stamps hash (streams/sink/cluster.py). ARGV[1]:
--   {"fence": {partition: [epoch, seq]}, "after": {partition: [epoch, seq]}}
-- Sent last to each shard in a write, so that a stamp found there vouches for every write
-- before it on that shard. Reports the partitions whose stamp is older than `after`
-- (the shard lost writes: a replica that missed them took over), then takes each stamp
-- unless the owner check refuses it; returns {refused, behind}
-- (tests/integration/test_redis_cluster.py).
local changes = cjson.decode(ARGV[1])
local refused, behind = check_fences(KEYS[1], changes)
local out = {}
for partition in pairs(refused) do out[#out + 1] = tonumber(partition) end
return {out, behind}
