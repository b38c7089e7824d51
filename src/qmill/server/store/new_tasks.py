"""New task records: what a submit writes, and the scripts that write and confirm them.

A submit's records (one task, or a batch and its id list) are written in one atomic
script with a provisional TTL, and given the result TTL once every task is queued
(`TaskStore.create_many`, `TaskStore.confirm`): a refused or abandoned submit leaves
nothing for longer than that.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from qmill.server.models import TaskStatus

# A hash field's value as redis-py sends it; an optional field set to None is left out,
# which the views read as absent.
Value = str | int | float | bytes
Field = Value | None


# Every record of a submit (one task, or a whole batch), the batch's id list and the
# tenant's listing index entries (`qmill.server.store.listing`), in one atomic step:
# either all of them exist or none (nothing to undo after a Redis error mid-write).
# KEYS: task keys..., then the batch list if any, then index keys, then the event
# counter (`constants.EVENTS_SEQ_KEY`, always last). ARGV: ttl, task count, '1' if there
# is a batch list, the indexes' ttl, their trim bound ('(' + the oldest entry's prefix
# kept), then per task: its number of field/value args and those args; then the task
# ids if there is a batch list; then per index key: its number of new members and
# those members. Each index write trims entries older than any record can live and
# renews the key's TTL, so an index never outgrows its tenant's live records.
# Returns 0 (nothing written) if a task key already exists.
#
# Each record gets its first version (``seq``, `qmill.server.store.events`) from one
# INCRBY for the whole submit. Creation is not PUBLISHed: nobody can be listening yet
# (an event stream is opened for an id this script is about to return), and a stream
# reads the `pending` state from the record itself.
CREATE = """
local ttl, count, batched = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local index_ttl, cutoff = ARGV[4], ARGV[5]
for i = 1, count do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
local seq = redis.call('INCRBY', KEYS[#KEYS], count) - count
local a = 6
for i = 1, count do
  local n = tonumber(ARGV[a])
  redis.call('HSET', KEYS[i], 'seq', seq + i, unpack(ARGV, a + 1, a + n))
  redis.call('EXPIRE', KEYS[i], ttl)
  a = a + n + 1
end
local k = count + 1
if batched then
  for i = a, a + count - 1, 500 do
    redis.call('RPUSH', KEYS[k], unpack(ARGV, i, math.min(i + 499, a + count - 1)))
  end
  redis.call('EXPIRE', KEYS[k], ttl)
  a = a + count
  k = k + 1
end
for j = k, #KEYS - 1 do
  local n = tonumber(ARGV[a])
  for i = a + 1, a + n, 500 do
    local scored = {}
    for x = i, math.min(i + 499, a + n) do
      scored[#scored + 1] = 0
      scored[#scored + 1] = ARGV[x]
    end
    redis.call('ZADD', KEYS[j], unpack(scored))
  end
  redis.call('ZREMRANGEBYLEX', KEYS[j], '-', cutoff)
  redis.call('EXPIRE', KEYS[j], index_ttl)
  a = a + n + 1
end
return 1
"""

# KEYS: task keys (ARGV[1] of them), then the other keys to delete (ARGV[2]: answers,
# the batch list), then the index keys their entries may be in. ARGV after those two:
# per index key, how many of the tasks it lists and their positions among the task
# keys. Removes those entries (each record's `listed` prefix and id) and deletes the
# rest: the undo of CREATE, in as many steps as CREATE took.
DELETE = """
local count, others = tonumber(ARGV[1]), tonumber(ARGV[2])
local members = {}
for i = 1, count do
  local f = redis.call('HMGET', KEYS[i], 'listed', 'id')
  if f[1] and f[2] then members[i] = f[1] .. f[2] end
end
local a = 3
for j = count + others + 1, #KEYS do
  local n = tonumber(ARGV[a])
  for x = a + 1, a + n do
    local member = members[tonumber(ARGV[x])]
    if member then redis.call('ZREM', KEYS[j], member) end
  end
  a = a + n + 1
end
for i = 1, count + others, 500 do
  redis.call('DEL', unpack(KEYS, i, math.min(i + 499, count + others)))
end
return 1
"""

# KEYS: a submit's task keys and batch list. ARGV: ttl. Gives each its full lifetime;
# returns how many still existed (fewer: the provisional ones expired, the submit is void).
CONFIRM = """
local alive = 0
for i = 1, #KEYS do alive = alive + redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return alive
"""


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task record to create as `pending` (`TaskStore.create_many`)."""

    task_id: str
    circuit: str
    shots: int
    qubits: int | None = None
    depth: int | None = None
    seed: int | None = None
    memory: bool = False
    owner: str | None = None
    # The admitted options, `qmill.server.workload.Plan` as JSON.
    plan: str | None = None
    # The batch it was submitted in (None: submitted alone).
    batch_id: str | None = None
    # Its tags (checked: `qmill.server.tags`), stored as JSON.
    tags: Mapping[str, str] | None = None

    def fields(self, created: datetime) -> dict[str, Field]:
        return {
            "id": self.task_id,
            "status": TaskStatus.PENDING.value,
            "circuit": self.circuit,
            "shots": self.shots,
            "created_at": created.isoformat(),
            "attempts": 0,
            "qubits": self.qubits,
            "depth": self.depth,
            "seed": self.seed,
            "memory": "1" if self.memory else None,
            "owner": self.owner,
            "plan": self.plan,
            "batch_id": self.batch_id,
            "tags": json.dumps(dict(self.tags), ensure_ascii=False, separators=(",", ":"))
            if self.tags
            else None,
        }
