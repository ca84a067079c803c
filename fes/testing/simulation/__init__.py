"""Whole-system simulation: run a System in memory under a scheduler that injects faults.

:func:`simulate` runs a :class:`fes.System` on an in-memory database with an
injected clock and id factory.  The inputs — commands on the system's
applications — are executed first, in order; then a *schedule*, a list of
steps, says which follower or view runs next, how many notifications its
batch may hold, and which fault strikes it:

- :class:`Run` — a plain step;
- :class:`Crash` — the process crashes after processing a batch and before
  recording it: the commit is dropped and the application restarts from its
  tracked position;
- :class:`Redeliver` — the batch recorded last is delivered again (the
  follower reads a stale tracking position): tracking must refuse it;
- :class:`Conflict` — another unit (another instance, when it is the same
  one) commits between this batch's load and its commit;
- :class:`Hold` — a slow leader: events it records from now on stay
  invisible to every reader for some steps;
- :class:`Down` — a database is down for some steps: every read and write
  of its applications' stores fails, so their followers cannot record and
  their followers' followers cannot read; then it comes back;
- :class:`Quiesce` — no fault: every unit runs until the system is quiet,
  then the next *follow-up* adds inputs drawn from the quiet system's state.

The applications' stores may live in several databases (``databases=``).

After the schedule every follower and view runs until nothing is left (the
system is *quiet*).  The result is then compared with a fault-free run of
the same inputs by :class:`fes.edge.SyncRunner`: each application's streams
must hold the same events, in the same order, and each upstream event must
have caused the same effects — positions and timestamps may differ, as they
legitimately do between interleavings.  Each view stored must equal the
view rebuilt from its log, and the user's invariants (functions of a
read-only :class:`SystemState`) must hold.

The same seed gives the same run: the schedule (when not given) comes from
a seeded generator, timestamps from a clock that ticks one millisecond per
reading, ids from a counter.  :func:`check_system` lets Hypothesis generate
the inputs and the schedule, shrinks a failure to a short one, and raises an
``AssertionError`` that lists the inputs, the steps and what differed.

Requires Hypothesis (``pip install fes-events[testing]``).
"""

from __future__ import annotations

# MAX_ROUNDS and ApplicationFactory are not in __all__ but were importable from here
# before the split, so they still are (``as``: an explicit re-export)
from fes.testing.simulation._inputs import Input
from fes.testing.simulation._report import FollowedUp, Simulation
from fes.testing.simulation._run import ApplicationFactory as ApplicationFactory
from fes.testing.simulation._run import FollowUp
from fes.testing.simulation._schedule import (
    FAULTS,
    Conflict,
    Crash,
    Down,
    Hold,
    Quiesce,
    Redeliver,
    Run,
    Step,
    schedules,
    units,
)
from fes.testing.simulation._simulate import MAX_ROUNDS as MAX_ROUNDS
from fes.testing.simulation._simulate import check_system, simulate
from fes.testing.simulation._state import Invariant, SystemState

__all__ = [
    "FAULTS",
    "Conflict",
    "Crash",
    "Down",
    "FollowUp",
    "FollowedUp",
    "Hold",
    "Input",
    "Invariant",
    "Quiesce",
    "Redeliver",
    "Run",
    "Simulation",
    "Step",
    "SystemState",
    "check_system",
    "schedules",
    "simulate",
    "units",
]
