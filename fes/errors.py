"""One exception hierarchy for everything fes refuses.

Every error a user can cause derives from :class:`FesError`, so
``except fes.FesError`` catches all of them and nothing else.  The classes are
plain data: they carry the names and numbers that explain what went wrong.
"""

from __future__ import annotations

__all__ = [
    "CipherError",
    "CommandError",
    "CommandMistake",
    "ConcurrencyError",
    "ConfigurationError",
    "DecodeError",
    "DefinitionError",
    "DuplicateTracking",
    "EncodeError",
    "FesError",
    "FollowerStopped",
    "OutcomeUnknown",
    "PolicyError",
    "Rejected",
    "StoreError",
    "StoreURLError",
    "StoreUnavailable",
    "SystemDefinitionError",
    "UnhandledEvent",
    "UnknownTopic",
    "UpcastError",
    "ViewError",
]


class FesError(Exception):
    """The base of every error fes raises on purpose."""


class Rejected(FesError):
    """A command refused to act: a domain rule said no.

    Raise it from a command with a message a user understands, e.g.
    ``raise fes.Rejected("insufficient funds: balance 10, withdrawal 25")``.
    """


class DefinitionError(FesError, TypeError):
    """An aggregate, projector, policy or view was defined inconsistently."""


class UnhandledEvent(FesError, LookupError):
    """A projector met an event type it has no handler for."""

    def __init__(self, event_type: type, where: str = "", *, message: str = "") -> None:
        self.event_type = event_type
        self.where = where
        place = f" in {where}" if where else ""
        super().__init__(
            message
            or f"no handler for event type {event_type.__qualname__!r}{place}; "
            "add a handler for it or remove it from the aggregate's events"
        )


class CommandError(FesError, TypeError):
    """A command was called on a state it does not accept, or misbehaved."""


class CommandMistake(CommandError):
    """A mistake in the code whatever the state: not a refusal by the domain.

    A command given arguments it does not take, or that returned what is
    not a list of its aggregate's events; an object called as a command
    that is none; an event emitted to a stream of an aggregate that does not
    own it.  A test that meets one fails (``fes.testing.simulation``'s
    checks raise it, naming the input), where a state the command does not
    accept is a refusal, as :class:`Rejected` is.
    """


class UpcastError(FesError):
    """A stored event's schema version could not be brought up to date."""


class SystemDefinitionError(FesError, ValueError):
    """A system's applications or pipes do not fit together."""


def _stopped(what: str, error: BaseException) -> str:
    """A stop's message: what stopped where, then the error with its notes."""
    notes = getattr(error, "__notes__", None)
    said = f" ({'; '.join(map(str, notes))})" if notes else ""
    return f"{what}: {type(error).__name__}: {error}{said}"


class PolicyError(FesError):
    """A follower's policy raised while processing an upstream event."""

    def __init__(self, app: str, leader: str, position: int, error: BaseException) -> None:
        self.app = app
        self.leader = leader
        self.position = position
        self.error = error
        if isinstance(error, DecodeError | UpcastError):
            # an event (the leader's, or the follower's own) could not be read:
            # keys, types or an upcaster, not the policy
            what = f"{app!r} could not decode an event for {leader!r} position {position}"
        elif isinstance(error, ConfigurationError):
            what = f"{app!r} stopped before {leader!r} position {position}"
        else:
            what = f"policy of {app!r} failed on {leader!r} position {position}"
        super().__init__(_stopped(what, error))
        #: ``error``'s traceback as text, formatted when the follower (or view)
        #: stopped: the source lines as they were then, not as a later edit of
        #: the file shows them.  None until it stops.
        self.traceback: str | None = None


class ViewError(PolicyError):
    """A view's ``apply`` raised (or an event it folds could not be read): the view stopped.

    ``app`` is the application whose log the view folds (also its
    ``leader``), ``view`` the view's name and ``position`` that of the
    event it failed on.
    """

    def __init__(self, app: str, view: str, position: int, error: BaseException) -> None:
        self.app = app
        self.leader = app
        self.view = view
        self.position = position
        self.error = error
        if isinstance(error, DecodeError | UpcastError):
            what = f"view {view!r} of {app!r} could not decode the event at position {position}"
        else:
            what = f"view {view!r} of {app!r} failed on position {position}"
        FesError.__init__(self, _stopped(what, error))

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.app, self.view, self.position, self.error))


class FollowerStopped(PolicyError):
    """One or more followers (or views) a runner drives have stopped on an error.

    Raised instead of reporting "quiet" or "done": ``errors`` maps each
    stopped follower (``name``, or ``name#i`` for a partition) to its
    :class:`PolicyError`, which says on which leader and position, and why;
    and each stopped view (``app/view``) to its :class:`ViewError`.
    ``app``, ``leader``, ``position`` and ``error`` are those of the first.
    """

    def __init__(self, errors: dict[str, PolicyError]) -> None:
        if not errors:
            raise ValueError("FollowerStopped needs at least one stopped follower")
        self.errors = dict(errors)
        first = next(iter(self.errors.values()))
        super().__init__(first.app, first.leader, first.position, first.error)
        lines = "; ".join(f"{unit}: {error}" for unit, error in self.errors.items())
        views = sum(isinstance(error, ViewError) for error in self.errors.values())
        counted = ", ".join(
            f"{count} {what}" for count, what in (
                (len(self.errors) - views, "follower(s)"), (views, "view(s)")
            ) if count
        )
        self.args = (f"{counted} stopped: {lines}",)

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.errors,))


# Errors raised at the edge.  They live here so that one hierarchy covers the
# whole library and domain code can catch them without importing the edge.


class ConfigurationError(FesError, ValueError):
    """A setting (an argument or an environment variable) has a bad value."""


class StoreError(FesError):
    """The event store could not do what was asked."""


class StoreURLError(StoreError, ConfigurationError):
    """A store URL could not be understood."""


class StoreUnavailable(StoreError):
    """The store's server could not be reached or refused the connection.

    The message names the URL (password masked) and what to fix: the
    password, the database or role name, the host, or a server that is not
    running.  Wrong names and credentials fail at once; a server that
    refuses connections is retried until the first-connect timeout.
    ``transient`` says whether trying again later may succeed (a server
    away or a pool busy) or not (a wrong name, password or host).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class OutcomeUnknown(StoreError):
    """A write's connection was lost after its ``COMMIT`` was sent: it may or may not be stored.

    Either way it is whole: all of it is stored, or none.  fes does not
    try it again, since a second try could store it twice; once the store
    answers, read what the write would have changed (a stream's version,
    say) and decide from that.  Only a store with a server raises it
    (PostgreSQL's); a runner's follower needs nothing of this, since its
    tracking position is stored in the same transaction.  ``what`` is the
    attempt (``"append to 'orders'"``), ``url`` the store's (password
    masked), ``reason`` the lost connection's error, on one line.
    ``advice`` says what to do, when the default (read before trying again)
    is not it: a runner's follower says that stepping again is safe.
    """

    #: What to do, unless the raiser knows better.
    READ_FIRST = (
        "once the server answers, read what it writes (a stream's version) before trying again"
    )

    def __init__(self, what: str, url: str, reason: str, advice: str = READ_FIRST) -> None:
        self.what = what
        self.url = url
        self.reason = reason
        self.advice = advice
        # the advice before the connection's error: a log line cut short keeps it
        super().__init__(
            f"unknown whether the attempt to {what} took effect: the connection to {url} "
            f"was lost while committing. It took effect whole or not at all: {advice} "
            f"(the connection's error: {reason})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.what, self.url, self.reason, self.advice))


class ConcurrencyError(StoreError):
    """An append expected a stream version that another writer already took."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream!r} is at version {actual}, but the append expected "
            f"version {expected}; nothing was stored"
        )


class DuplicateTracking(StoreError):
    """A tracking position was recorded before: the upstream event was processed."""

    def __init__(self, leader: str, position: int) -> None:
        self.leader = leader
        self.position = position
        super().__init__(
            f"position {position} of {leader!r} was already processed; nothing was stored"
        )


class EncodeError(StoreError):
    """A value cannot be stored as given, since it would not read back: nothing was stored.

    An event or state whose field holds a value of another type than the
    field declares (``10.5`` for an ``int``, ``True`` for a ``float``), an
    integer beyond 64 bits, or metadata of the wrong shape.
    """


class DecodeError(StoreError):
    """A stored record could not be turned back into a value."""


class UnknownTopic(DecodeError):
    """A stored record names a topic that is not registered."""

    def __init__(self, topic: str, known: frozenset[str] | None = None) -> None:
        self.topic = topic
        hint = ""
        if known:
            hint = f"; registered topics: {', '.join(sorted(known)[:10])}"
            if len(known) > 10:
                hint += ", …"
        super().__init__(f"unknown topic {topic!r}: it is not registered{hint}")


class CipherError(DecodeError):
    """A stored record failed to decrypt: wrong key, tampered or moved."""
