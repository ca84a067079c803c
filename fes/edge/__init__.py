"""The edge of fes: everything that performs effects.

- :class:`Application` loads, folds, decides and appends for one :class:`fes.App`;
- :class:`Codec` and :class:`Cipher` turn events into bytes and back, and
  :func:`reseal` moves stored events under a new key; :func:`prune_snapshots`
  deletes the snapshots an earlier definition of an aggregate wrote;
- stores (memory, SQLite, PostgreSQL) are chosen by one URL with
  :func:`open_database`, and implement the protocol of :mod:`fes.edge.stores`;
- runners (:class:`SyncRunner`, :class:`ThreadedRunner`, :class:`ProcessRunner`,
  :func:`run`) execute a :class:`fes.System`, each upstream event exactly once;
- :class:`Projection` keeps a :class:`fes.View` up to date with its position.

These three modules are public: ``fes.edge``, ``fes.edge.codec`` and
``fes.edge.stores``.  The others (their names start with an underscore) are
the implementation and may move between releases.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fes.edge._application import Application
    from fes.edge._batch import Batch
    from fes.edge._clock import utc_now
    from fes.edge._follower import Follower, skipped
    from fes.edge._loading import load_system
    from fes.edge._processes import ProcessRunner
    from fes.edge._projections import Projection
    from fes.edge._pruning import prune_snapshots
    from fes.edge._resealing import Resealing, reseal
    from fes.edge._runners import Lag, Runner, SyncRunner, ThreadedRunner, lags
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
    "Lag",
    "ProcessRunner",
    "Projection",
    "Resealing",
    "Runner",
    "SyncRunner",
    "ThreadedRunner",
    "lags",
    "load_system",
    "open_database",
    "prune_snapshots",
    "reseal",
    "run",
    "skipped",
    "utc_now",
]

# Each public name and the module that defines it.  They are imported on
# first use (PEP 562), so that ``import fes.edge`` costs little more than
# ``import fes``: the codec (cattrs, orjson), the stores, the runners and
# multiprocessing load only for a program that uses them.
_HOMES = {
    "Application": "fes.edge._application",
    "Batch": "fes.edge._batch",
    "utc_now": "fes.edge._clock",
    "Follower": "fes.edge._follower",
    "skipped": "fes.edge._follower",
    "load_system": "fes.edge._loading",
    "Lag": "fes.edge._runners",
    "ProcessRunner": "fes.edge._processes",
    "Projection": "fes.edge._projections",
    "prune_snapshots": "fes.edge._pruning",
    "Resealing": "fes.edge._resealing",
    "reseal": "fes.edge._resealing",
    "Runner": "fes.edge._runners",
    "SyncRunner": "fes.edge._runners",
    "ThreadedRunner": "fes.edge._runners",
    "lags": "fes.edge._runners",
    "run": "fes.edge._serve",
    "SKIPS_STREAM": "fes.edge._skips",
    "PolicySkipped": "fes.edge._skips",
    "Cipher": "fes.edge.codec",
    "Codec": "fes.edge.codec",
    "open_database": "fes.edge.stores",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, and keep the name here."""
    if name in ("codec", "stores"):  # the public subpackages, as an eager import gave them
        return importlib.import_module(f"{__name__}.{name}")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily imported ones included."""
    return sorted({*globals(), *__all__})
