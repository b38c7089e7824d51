"""Deployment entry point of the health function: functions-framework loads this file
(``--source functions/health/main.py --target health``); the code lives in
`qmill.server.functions.health`, installed with qmill[server]."""

from qmill.server.functions.health import health

__all__ = ["health"]
