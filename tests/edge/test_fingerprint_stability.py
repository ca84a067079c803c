"""A snapshot's fingerprint does not depend on what touched the domain's classes first.

``fes.examples.bank`` and ``fes.examples.dogs`` use ``from __future__ import
annotations``: their attrs fields' types are strings until attrs or cattrs
resolve them in place, which building a codec does.  The fingerprint used to
digest the type as it found it, so the first Application in a process wrote
snapshots that every later one ignored (folding whole streams instead).
Each case runs in a fresh interpreter, since this one has resolved them long ago.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PRINT = (
    "import fes\n"
    "from fes.examples import bank, dogs\n"
    "def prints():\n"
    "    return (fes.fingerprint(bank.accounts), fes.fingerprint(dogs.dogs))\n"
)

#: What may touch the classes before the fingerprint is taken, one way per case.
TOUCHES = {
    "nothing": "",
    "an application": (
        "from fes.edge import Application\n"
        "Application(fes.App('bank', aggregates=[bank.accounts, dogs.dogs]), 'memory://',"
        " snapshot_every=1)\n"
    ),
    "a codec writing a state": (
        "from fes.edge import Codec\n"
        "Codec([dogs.dogs]).encode_state(dogs.dogs, dogs.Dog('Rex'), stream='s', version=1)\n"
    ),
    "a strategy": (
        "from fes.testing.strategies import strategy_for\n"
        "strategy_for(dogs.Dog).example()\n"
    ),
    "attrs itself": (
        "import attrs\nattrs.resolve_types(dogs.Dog)\nattrs.resolve_types(bank.Account)\n"
    ),
}


def _fingerprints(touch: str) -> str:
    script = f"{_PRINT}before = prints()\n{touch}after = prints()\n"
    script += "assert before == after, (before, after)\nprint(after)\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("touch", list(TOUCHES))
def test_fingerprint_is_the_same_before_and_after_the_classes_are_touched(touch: str) -> None:
    """Building an Application, a codec or a strategy leaves every fingerprint as it was."""
    assert _fingerprints(TOUCHES[touch])


def test_fingerprint_is_the_same_in_every_process_whatever_ran_first() -> None:
    """Processes that touched the classes in different orders agree on each fingerprint."""
    seen = {_fingerprints(TOUCHES[touch]) for touch in TOUCHES}
    assert len(seen) == 1, seen
