"""Benchmarks for tokenwire. Each prints a table; ``python -m bench`` runs the SSE fan-out.

Nothing here is part of the installed package: the bench imports ``tokenwire``
like any user would and runs servers and clients as separate processes.
"""
