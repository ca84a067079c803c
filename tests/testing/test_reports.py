"""Failure reports tell the story of the domain, not fes's own frames or contradictions."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from attrs import evolve
from hypothesis import settings

from fes.examples import dogs
from fes.testing import check_laws

FAST = settings(max_examples=30, database=None, deadline=None, derandomize=True)

FAILING = textwrap.dedent(
    '''
    from hypothesis import settings
    from fes.examples import bank
    from fes.testing import check_aggregate, check_laws, given

    FAST = settings(max_examples=30, database=None, deadline=None, derandomize=True)

    def never_positive(account):
        return account is None or account.balance <= 0

    def test_aggregate():
        check_aggregate(bank.accounts, [never_positive], settings=FAST)

    def test_spec():
        given(bank.accounts, bank.AccountOpened("Ada")).when(bank.deposit, 5).then()

    def test_system():
        from testing.test_simulation import SHOP_INPUTS, shop
        from fes.testing.simulation import check_system

        def every_order_is_paid(final):
            orders = final.states("orders", shop.order).values()
            return all(o.status == "paid" for o in orders)

        check_system(shop.system, SHOP_INPUTS, [every_order_is_paid], seed=6,
                     settings=settings(max_examples=50, database=None, deadline=None))
    '''
)


def run_pytest(tmp_path: Path) -> str:
    """Run pytest on the failing module above, in a subprocess; its output."""
    module = tmp_path / "test_failing.py"
    module.write_text(FAILING)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-cov",
         "-p", "no:randomly", str(module)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    return done.stdout + done.stderr


def test_pytest_reports_show_no_fes_frames(tmp_path: Path) -> None:
    """check_aggregate, check_system and the specs fail in the test's line, fes's frames hidden."""
    output = run_pytest(tmp_path)
    assert "3 failed" in output
    assert "fes/testing/machines.py" not in output
    assert "fes/testing/specs.py" not in output
    assert "fes/testing/simulation" not in output
    assert "the simulated run breaks 1 invariant" in output
    assert "then invariant never_positive failed" in output
    assert "AssertionError: aggregate 'account' failed" in output


def test_a_bare_event_is_not_called_a_refusal() -> None:
    """A command returning one event, not a list, is named as such without calling it a refusal."""

    def register(dog: dogs.Dog | None, name: str) -> object:
        return dogs.Registered(name)

    bad = evolve(dogs.dogs, commands={**dogs.dogs.commands, "register": register})
    with pytest.raises(AssertionError) as caught:
        check_laws(bad, settings=FAST)
    message = str(caught.value)
    assert "did not return a sequence of events" in message
    assert "refusals" not in message
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "Failing test case" not in notes
    assert "what the run exercised" in notes
