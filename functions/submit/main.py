"""Deployment entry point of the submit function: functions-framework loads this file
(``--source functions/submit/main.py --target submit``); the code lives in
`qmill.server.functions.submit`, installed with qmill[server]."""

from qmill.server.functions.submit import submit

__all__ = ["submit"]
