"""The worker's own errors: a simulation that did not produce a result.

    QmillError                      (qmill.server.errors)
     └── SimulationError            the simulator failed on a task; carries a FailureReason
          └── SimulationTimeout     ran past [limits] max_execution_seconds and was stopped

They never reach HTTP: the worker turns them into a `failed` task whose error is the
message, and counts them in ``qmill_tasks_failed_total`` under ``reason``. The reason
travels with the error from where it is raised (the simulator, the simulation child,
the executor), so the count never has to guess it back from the message's wording.
"""

from __future__ import annotations

from enum import StrEnum

from qmill.server.errors import QmillError


class FailureReason(StrEnum):
    """Why a task ended `failed`: the ``reason`` label of ``qmill_tasks_failed_total``.

    A small fixed set, so the metric's cardinality stays bounded whatever the messages say.
    The values are what dashboards (``infra/grafana/``) and alerts group by: keep them.
    """

    TIMEOUT = "timeout"
    GAVE_UP = "gave_up"
    CRASHED = "crashed"
    SIMULATOR_ERROR = "simulator_error"
    INVALID_CIRCUIT = "invalid_circuit"
    # Simulated, but Redis refused the result: it is full ([redis] max_memory_mb).
    STORE_FULL = "store_full"
    OTHER = "other"

    @classmethod
    def parse(cls, value: object) -> FailureReason:
        """The reason a simulation child reported; `OTHER` for one this worker does not know."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.OTHER


class SimulationError(QmillError):
    """The simulator rejected or crashed on a task. ``retryable`` if another attempt may work."""

    def __init__(
        self, message: str, reason: FailureReason = FailureReason.OTHER, *, retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


class SimulationTimeout(SimulationError):
    """Final, not retried: another attempt would run just as long."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"timeout: the simulation ran longer than {seconds:g} s and was stopped",
            FailureReason.TIMEOUT,
        )
