"""The three HTTP functions, one module each, importable from an installed package.

``functions/<name>/main.py`` in the repository re-exports each one: that file is what
functions-framework deploys (``--source``), and it holds no code of its own.
"""
