"""Bank accounts: open, deposit, withdraw within an overdraft limit, close.

Amounts are integers in cents.  The invariant a user would property-test:
an open account's balance never goes below minus its overdraft limit.
"""

from __future__ import annotations

from attrs import evolve, frozen

import fes

__all__ = [
    "Account",
    "AccountClosed",
    "AccountOpened",
    "Deposited",
    "OverdraftLimitSet",
    "Withdrawn",
    "accounts",
    "balance_within_overdraft",
    "close",
    "deposit",
    "open_account",
    "set_overdraft_limit",
    "withdraw",
]


@frozen
class AccountOpened:
    owner: str


@frozen
class Deposited:
    amount: int


@frozen
class Withdrawn:
    amount: int


@frozen
class OverdraftLimitSet:
    limit: int


@frozen
class AccountClosed:
    pass


@frozen
class Account:
    """An account's state."""

    owner: str
    balance: int = 0
    overdraft_limit: int = 0
    closed: bool = False


def opened(account: Account | None, event: AccountOpened) -> Account:
    return Account(event.owner)


def deposited(account: Account, event: Deposited) -> Account:
    return evolve(account, balance=account.balance + event.amount)


def withdrawn(account: Account, event: Withdrawn) -> Account:
    return evolve(account, balance=account.balance - event.amount)


def limit_set(account: Account, event: OverdraftLimitSet) -> Account:
    return evolve(account, overdraft_limit=event.limit)


def closed(account: Account, event: AccountClosed) -> Account:
    return evolve(account, closed=True)


def _open(account: Account) -> None:
    if account.closed:
        raise fes.Rejected("the account is closed")


def _positive(amount: int) -> None:
    if amount <= 0:
        raise fes.Rejected(f"amount must be positive, got {amount}")


def open_account(account: Account | None, owner: str) -> list[AccountOpened]:
    """Open an account for ``owner``."""
    if account is not None:
        raise fes.Rejected("the account is already open")
    return [AccountOpened(owner)]


def deposit(account: Account, amount: int) -> list[Deposited]:
    """Pay ``amount`` cents in."""
    _open(account)
    _positive(amount)
    return [Deposited(amount)]


def withdraw(account: Account, amount: int) -> list[Withdrawn]:
    """Take ``amount`` cents out, if the overdraft limit allows it."""
    _open(account)
    _positive(amount)
    if account.balance - amount < -account.overdraft_limit:
        raise fes.Rejected(
            f"insufficient funds: balance {account.balance}, "
            f"overdraft limit {account.overdraft_limit}, withdrawal {amount}"
        )
    return [Withdrawn(amount)]


def set_overdraft_limit(account: Account, limit: int) -> list[OverdraftLimitSet]:
    """Change the overdraft limit; it may not leave the balance beyond it."""
    _open(account)
    if limit < 0:
        raise fes.Rejected(f"an overdraft limit cannot be negative, got {limit}")
    if account.balance < -limit:
        raise fes.Rejected(
            f"the balance {account.balance} is already below minus the new limit {limit}"
        )
    return [OverdraftLimitSet(limit)]


def close(account: Account) -> list[AccountClosed]:
    """Close the account; it must not be overdrawn."""
    _open(account)
    if account.balance < 0:
        raise fes.Rejected(f"cannot close an overdrawn account (balance {account.balance})")
    return [AccountClosed()]


def balance_within_overdraft(account: Account | None) -> bool:
    """The invariant: the balance never goes below minus the overdraft limit."""
    return account is None or account.balance >= -account.overdraft_limit


accounts: fes.Aggregate[Account | None] = fes.Aggregate(
    name="account",
    initial=None,
    apply=fes.projector(opened, deposited, withdrawn, limit_set, closed, name="account"),
    events=[AccountOpened, Deposited, Withdrawn, OverdraftLimitSet, AccountClosed],
    commands=[open_account, deposit, withdraw, set_overdraft_limit, close],
)
