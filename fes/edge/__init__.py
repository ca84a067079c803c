"""The edge of fes: everything that performs effects.

- :class:`Application` loads, folds, decides and appends for one :class:`fes.App`;
- :class:`Codec` and :class:`Cipher` turn events into bytes and back, and
  :func:`reseal` moves stored events under a new key;
- stores (memory, SQLite, PostgreSQL) are chosen by one URL with
  :func:`open_database`, and implement the protocol of :mod:`fes.edge.stores`;
- runners (:class:`SyncRunner`, :class:`ThreadedRunner`, :class:`ProcessRunner`,
  :func:`run`) execute a :class:`fes.System`, each upstream event exactly once;
- :class:`Projection` keeps a :class:`fes.View` up to date with its position.

These three modules are public: ``fes.edge``, ``fes.edge.codec`` and
``fes.edge.stores``.  The others (their names start with an underscore) are
the implementation and may move between releases.
"""

from fes.edge._application import Application
from fes.edge._batch import Batch
from fes.edge._clock import utc_now
from fes.edge._follower import Follower, skipped
from fes.edge._loading import load_system
from fes.edge._processes import ProcessRunner
from fes.edge._projections import Projection
from fes.edge._resealing import Resealing, reseal
from fes.edge._runners import Runner, SyncRunner, ThreadedRunner, lags
from fes.edge._serve import run
from fes.edge._skips import SKIPS_STREAM, PolicySkipped
from fes.edge.codec import Cipher, Codec
from fes.edge.stores import open_database

__all__ = [
    "SKIPS_STREAM",
    "Application",
    "Batch",
    "Cipher",
    "Codec",
    "Follower",
    "PolicySkipped",
    "ProcessRunner",
    "Projection",
    "Resealing",
    "Runner",
    "SyncRunner",
    "ThreadedRunner",
    "lags",
    "load_system",
    "open_database",
    "reseal",
    "run",
    "skipped",
    "utc_now",
]
