"""The dog school: dogs are registered and learn tricks."""

from __future__ import annotations

from attrs import evolve, field, frozen
from pyrsistent import PVector, pvector

import fes

__all__ = ["Dog", "Registered", "TrickAdded", "add_trick", "dogs", "register"]


@frozen
class Registered:
    """A dog joined the school."""

    name: str


@frozen
class TrickAdded:
    """A dog learned a trick."""

    trick: str


@frozen
class Dog:
    """A dog's state: its name and the tricks it knows, in the order learned."""

    name: str
    tricks: PVector[str] = field(factory=pvector)


def registered(dog: Dog | None, event: Registered) -> Dog:
    return Dog(event.name)


def trick_added(dog: Dog, event: TrickAdded) -> Dog:
    return evolve(dog, tricks=dog.tricks.append(event.trick))


def register(dog: Dog | None, name: str) -> list[Registered]:
    """Register a new dog."""
    if dog is not None:
        raise fes.Rejected(f"dog {dog.name!r} is already registered")
    if not name.strip():
        raise fes.Rejected("a dog needs a name")
    return [Registered(name)]


def add_trick(dog: Dog, trick: str) -> list[TrickAdded]:
    """Teach a dog a trick; a trick it knows already changes nothing."""
    if not trick.strip():
        raise fes.Rejected("a trick needs a name")
    return [] if trick in dog.tricks else [TrickAdded(trick)]


dogs: fes.Aggregate[Dog | None] = fes.Aggregate(
    name="dog",
    initial=None,
    apply=fes.projector(registered, trick_added, name="dog"),
    events=[Registered, TrickAdded],
    commands=[register, add_trick],
)
