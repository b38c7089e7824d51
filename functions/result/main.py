"""Deployment entry point of the result function: functions-framework loads this file
(``--source functions/result/main.py --target result``); the code lives in
`qmill.server.functions.result`, installed with qmill[server]."""

from qmill.server.functions.result import result

__all__ = ["result"]
