"""Benchmarks of fes beside eventsourcing 9.5.6 and raw sqlite3 (not tests).

Run them with ``python -m benchmarks.run`` (see ``benchmarks/README.md``).
"""
