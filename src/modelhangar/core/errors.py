"""Errors the core raises; each face maps them to its own wire format."""

from __future__ import annotations


class HangarError(Exception):
    """Base class of every error the core raises on purpose."""


class NotFound(HangarError):
    """The named model, tag, manifest, blob or trash entry does not exist."""


class BlobUnknown(NotFound):
    """A manifest names a blob the store does not hold (or holds only as being deleted)."""

    def __init__(self, digests: list[str]) -> None:
        self.digests = digests
        super().__init__("blob unknown: " + ", ".join(digests))


class DigestMismatch(HangarError):
    """Uploaded content does not hash to the digest the client named."""

    def __init__(self, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f'digest mismatch, expected "{expected}", got "{actual}"')


class SizeMismatch(HangarError):
    """Uploaded content is not as long as the client said it is."""


class TooLarge(HangarError):
    """An input (a request body, a text) is longer than its limit."""

    def __init__(self, limit: int, what: str = "request body") -> None:
        self.limit = limit
        super().__init__(f"{what} is larger than the {limit}-byte limit")


class InvalidManifest(HangarError):
    """A manifest is not JSON, or not a manifest, or names an invalid digest.

    `reason` is the message without any value quoted from the manifest (for answers about a
    manifest someone else's server sent)."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class Conflict(HangarError):
    """The operation clashes with the current state (e.g. restore onto a name taken again)."""


class Denied(HangarError):
    """The actor may see this, but may not do that to it (another account's model or namespace)."""


class QuotaExceeded(HangarError):
    """A push or create would take its owner past the bytes or models it may store."""


class Unauthenticated(HangarError):
    """A request without a valid token where one is needed (invalid, revoked or expired included)."""


class Unavailable(HangarError):
    """A service the store stands on (the catalog's database, the object store) did not answer. Every
    face answers 503 with `Retry-After` in its own format (README, "Safety rules")."""

    retry_after = 5
    advice = "a service the store needs is unavailable right now; nothing was kept, retry in a few seconds"


class CatalogUnavailable(Unavailable):
    """The catalog's database connection was lost (a restart, a failover, a killed backend) or could not
    be made. Its transaction was rolled back by the database, so the request changed nothing, unless
    the connection went while committing (`committing`): then whether it took effect is unknown."""

    retry_after = 1
    advice = "the catalog database is unavailable right now; nothing was changed, retry in a second"

    def __init__(self, *, committing: bool = False) -> None:
        self.committing = committing
        if committing:
            self.advice = (
                "the catalog database went away while committing: the change may or may not have "
                "been made; look before retrying"
            )
        super().__init__(self.advice)


class Refused(HangarError):
    """A deletion plan has blockers; the plan says which."""

    def __init__(self, plan: object, message: str) -> None:
        self.plan = plan
        super().__init__(message)


def model_not_found(model: str) -> str:
    """`model "tiny:latest" not found`: the wording of every command and of modelhangar's own API
    (`model` in Ollama's shortest form). Ollama's API keeps Ollama's own texts."""
    return f'model "{model}" not found'


def not_in_trash(ident: str) -> str:
    """What restoring a trash entry id, or a model name (shortest form), that the trash lacks says."""
    return f"no trash entry {ident}" if ident.isdigit() else f'model "{ident}" is not in the trash'


def one_line(exc: BaseException) -> str:
    """An error as a log line: the first line of what caused it (a database error's driver message,
    without its SQL and parameters)."""
    cause = exc.__cause__ or exc
    orig = getattr(cause, "orig", None)
    text = str(orig if orig is not None else cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__
