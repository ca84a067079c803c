"""The edge of fes: everything that performs effects.

- :class:`Application` loads, folds, decides and appends for one :class:`fes.App`;
- :class:`Codec` and :class:`Cipher` turn events into bytes and back;
- stores (memory, SQLite, PostgreSQL) are chosen by one URL with
  :func:`open_database`, and implement :mod:`fes.edge.stores.base`;
- runners (:class:`SyncRunner`, :class:`ThreadedRunner`, :class:`ProcessRunner`,
  :func:`run`) execute a :class:`fes.System`, each upstream event exactly once;
- :class:`Projection` keeps a :class:`fes.View` up to date with its position.
"""

from fes.edge._follower import Follower, skipped
from fes.edge._loading import load_system
from fes.edge._processes import ProcessRunner
from fes.edge._runners import Runner, SyncRunner, ThreadedRunner, lags
from fes.edge._serve import run
from fes.edge.application import Application, Batch
from fes.edge.codec import Cipher, Codec
from fes.edge.projections import Projection
from fes.edge.stores import open_database

__all__ = [
    "Application",
    "Batch",
    "Cipher",
    "Codec",
    "Follower",
    "ProcessRunner",
    "Projection",
    "Runner",
    "SyncRunner",
    "ThreadedRunner",
    "lags",
    "load_system",
    "open_database",
    "run",
    "skipped",
]
