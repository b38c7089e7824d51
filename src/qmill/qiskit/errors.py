"""What `qmill.qiskit` raises itself, under the client's root error.

Everything the server answers still arrives as the client's own errors
(`qmill.client_errors`): a 400 is `InvalidCircuitError` with line and column, a 422
`InvalidRequestError`. These two are refusals made here, before anything is sent::

    QmillClientError                  (qmill.client_errors)
     ├── UnsupportedCircuitError      a circuit OpenQASM 3 cannot carry (also ValueError)
     └── UnknownOptionError           an option nobody would read (also TypeError)
"""

from __future__ import annotations

from qmill.client_errors import QmillClientError


class UnsupportedCircuitError(QmillClientError, ValueError):
    """The circuit cannot be sent as OpenQASM 3 as it is (see `qmill.qiskit.programs`).

    A ValueError too, so code written for Qiskit's primitives, which catch ValueError for
    a bad PUB, catches this as well.
    """


class UnknownOptionError(QmillClientError, TypeError):
    """An option the backend or primitive does not know.

    Refused instead of ignored: ``run(qc, method="density_matrix")`` against a backend
    that dropped unknown options would run the default method, a wrong answer nobody
    sees. A TypeError, as an unexpected keyword argument is.
    """

    def __init__(self, owner: str, unknown: set[str], accepted: set[str]) -> None:
        names = ", ".join(sorted(unknown))
        super().__init__(
            f"{owner} does not know the option(s) {names}; it accepts {', '.join(sorted(accepted))}"
        )
        self.unknown = frozenset(unknown)
        self.accepted = frozenset(accepted)
