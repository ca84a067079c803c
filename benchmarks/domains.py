"""The benchmark domains, written once for fes and once for eventsourcing.

fes: the dog school of :mod:`fes.examples.dogs` (register, add_trick), the
bank accounts of :mod:`fes.examples.bank` (a state of bounded size, for the
snapshot workload), and a registry that issues one certificate per
registered dog (the follower of the pipeline workloads).

eventsourcing: the same aggregates as ``Aggregate`` classes with ``@event``
methods, and the same follower as a ``ProcessApplication``.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from eventsourcing.application import Application as EsApplication
from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import Aggregate as EsAggregate
from eventsourcing.domain import event
from eventsourcing.system import ProcessApplication

import fes
from fes.examples.bank import accounts
from fes.examples.dogs import Dog, Registered, TrickAdded, dogs

__all__ = [
    "BANK",
    "DIRECT_SCHOOL",
    "REGISTRY",
    "SCHOOL",
    "SYSTEM",
    "Bank",
    "Certificate",
    "DogSchool",
    "EsAccount",
    "EsCertificate",
    "EsDog",
    "Issued",
    "Registry",
    "certificates",
    "direct_dogs",
    "direct_registered",
    "direct_trick_added",
    "issue_certificate",
    "sqlite_env",
]

# --- fes ------------------------------------------------------------------------


@frozen
class Issued:
    """A certificate was issued to a registered dog."""

    dog: str


@frozen
class Certificate:
    """A certificate's state: the dog it was issued to."""

    dog: str


def issued(certificate: Certificate | None, event: Issued) -> Certificate:
    return Certificate(event.dog)


certificates: fes.Aggregate[Certificate | None] = fes.Aggregate(
    name="certificate",
    initial=None,
    apply=fes.projector(issued, name="certificate"),
    events=(Issued,),
)


def issue_certificate(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    """One new event, in a new stream, for every upstream event."""
    dog = recorded.stream
    return [fes.Emit(certificates, f"certificate-{dog}", (Issued(dog),))]


def direct_registered(dog: Dog | None, event: Registered) -> Dog:
    return Dog(event.name)


def direct_trick_added(dog: Dog, event: TrickAdded) -> Dog:
    return Dog(dog.name, dog.tricks.append(event.trick))


#: The example's dog with projectors that call ``Dog(...)`` instead of ``attrs.evolve``
#: (same events, same state, same topics): it shows the cost of the domain's own code.
direct_dogs: fes.Aggregate[Dog | None] = fes.Aggregate(
    name="dog",
    initial=None,
    apply=fes.projector(direct_registered, direct_trick_added, name="dog"),
    events=(Registered, TrickAdded),
)

SCHOOL = fes.App("school", aggregates=(dogs,))
#: The same school (same tables, same topics) keeping ``direct_dogs``.
DIRECT_SCHOOL = fes.App("school", aggregates=(direct_dogs,))
REGISTRY = fes.App("registry", aggregates=(certificates,), policy=issue_certificate)
SYSTEM = fes.System((SCHOOL, REGISTRY), pipes=(("school", "registry"),))
BANK = fes.App("bank", aggregates=(accounts,))

# --- eventsourcing --------------------------------------------------------------


class EsDog(EsAggregate):
    """The dog: Registered(name), TrickAdded(trick)."""

    @event("Registered")
    def __init__(self, name: str) -> None:
        self.name = name
        self.tricks: list[str] = []

    @event("TrickAdded")
    def add_trick(self, trick: str) -> None:
        self.tricks.append(trick)


class DogSchool(EsApplication):  # type: ignore[type-arg]
    """The leader: dogs are registered here."""


class EsCertificate(EsAggregate):
    """A certificate issued to a dog: Issued(dog)."""

    @event("Issued")
    def __init__(self, dog: str) -> None:
        self.dog = dog


class Registry(ProcessApplication):  # type: ignore[type-arg]
    """The follower: one new certificate per upstream event, recorded with tracking."""

    def policy(
        self, domain_event: Any, processing_event: ProcessingEvent[Any]
    ) -> None:
        processing_event.collect_events(EsCertificate(str(domain_event.originator_id)))


class EsAccount(EsAggregate):
    """A bank account of bounded state: Opened(owner), Deposited(amount)."""

    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0

    @event("Deposited")
    def deposit(self, amount: int) -> None:
        self.balance += amount


class Bank(EsApplication):  # type: ignore[type-arg]
    """The bank application."""


def sqlite_env(**paths: str) -> dict[str, str]:
    """eventsourcing's settings for SQLite files: one file per application name."""
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite"}
    for app, path in paths.items():
        env[f"{app.upper()}_SQLITE_DBNAME"] = path
    return env
