"""New task records: what a submit writes, and the scripts that write and confirm them.

A submit's records (one task, or a batch and its id list) are written in one atomic
script with a provisional TTL, and given the result TTL once every task is queued
(`TaskStore.create_many`, `TaskStore.confirm`): a refused or abandoned submit leaves
nothing for longer than that.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from qmill.server.models import TaskStatus

# A hash field's value as redis-py sends it; an optional field set to None is left out,
# which the views read as absent.
Value = str | int | float | bytes
Field = Value | None


# Every record of a submit (one task, or a whole batch) and the batch's id list, in one
# atomic step: either all of them exist or none (nothing to undo after a Redis error
# mid-write). KEYS: task keys..., then the batch list if any, then the event counter
# (`constants.EVENTS_SEQ_KEY`, always last). ARGV: ttl, task count, then per task: its
# number of field/value args and those args; then the task ids. Returns 0 (nothing
# written) if a task key already exists.
#
# Each record gets its first version (``seq``, `qmill.server.store.events`) from one
# INCRBY for the whole submit. Creation is not PUBLISHed: nobody can be listening yet
# (an event stream is opened for an id this script is about to return), and a stream
# reads the `pending` state from the record itself.
CREATE = """
local ttl, count = ARGV[1], tonumber(ARGV[2])
for i = 1, count do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
local seq = redis.call('INCRBY', KEYS[#KEYS], count) - count
local a = 3
for i = 1, count do
  local n = tonumber(ARGV[a])
  redis.call('HSET', KEYS[i], 'seq', seq + i, unpack(ARGV, a + 1, a + n))
  redis.call('EXPIRE', KEYS[i], ttl)
  a = a + n + 1
end
if #KEYS > count + 1 then
  local batch = KEYS[count + 1]
  for i = a, #ARGV, 500 do
    redis.call('RPUSH', batch, unpack(ARGV, i, math.min(i + 499, #ARGV)))
  end
  redis.call('EXPIRE', batch, ttl)
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
        }
