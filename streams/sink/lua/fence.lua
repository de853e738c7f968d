-- The owner check every write script begins with (streams/worker/fence.py). A write is
-- stamped per partition with its worker's owner epoch (the consumer group generation it
-- was built in) and write sequence; `owners` holds each partition's newest epoch. A write
-- older than the partition's owner is a stalled worker's and is refused; a newer one takes
-- the partition over. An unstamped write (rankflow rebuild) is not checked.
-- (tests/integration/test_fencing.py)
local function owned(owners, partition, fence)
  if fence == nil then return true end
  local held = tonumber(redis.call('HGET', owners, partition .. '.epoch')) or -1
  if held > fence[1] then return false end
  redis.call('HSET', owners, partition .. '.epoch', fence[1], partition .. '.seq', fence[2])
  return true
end
-- Is the stamp Redis holds older than `after`, the last this writer had acknowledged?
-- Then Redis lost writes (a failover to a replica that missed them): this write's stamp
-- alone would hide it (tests/integration/test_redis_failover.py).
local function lost_writes(owners, partition, after)
  if after == nil then return false end
  local epoch = tonumber(redis.call('HGET', owners, partition .. '.epoch')) or -1
  local seq = tonumber(redis.call('HGET', owners, partition .. '.seq')) or -1
  return epoch < after[1] or (epoch == after[1] and seq < after[2])
end
-- Every partition of a write's {"fence": ..., "after": ...}: the owner check (which takes
-- the stamp), and the lost-writes check before it; the partitions refused (a set) and
-- those Redis is behind on (a list).
local function check_fences(owners, changes)
  local refused, behind = {}, {}
  local after = changes.after or {}
  for partition, fence in pairs(changes.fence) do
    if lost_writes(owners, partition, after[partition]) then
      behind[#behind + 1] = tonumber(partition)
    end
    if not owned(owners, partition, fence) then refused[partition] = true end
  end
  return refused, behind
end
-- A write's {"done": {partition: [epoch, seq, decayed]}}, sent with the last chunk of an
-- update: Redis holds the whole update now, and every decay due by `decayed`. A restore
-- rewrites only the accounts stamped after it (streams/sink/rewrite.py). Not for the
-- partitions the owner check refused, nor unless the data generation marker `marker`
-- holds the writer's `generation`: after a FLUSHALL, a write before the worker noticed
-- must not vouch for what the flush took (tests/integration/test_fence_scripts.py).
local function mark_done(hash, done, refused, marker, generation)
  if done == nil or next(done) == nil then return end
  if generation == nil or redis.call('GET', marker) ~= generation then return end
  for partition, mark in pairs(done) do
    if not refused[partition] then
      redis.call('HSET', hash, partition .. '.done_epoch', mark[1],
                 partition .. '.done_seq', mark[2], partition .. '.decayed', mark[3])
    end
  end
end
