"""Errors the domain operations raise; each edge maps them to its own answer."""


class DomainError(Exception):
    """A request the domain refuses, with a message fit to show the person who asked."""


class NotFound(DomainError):
    """No such ticket, agent or message: 404 on the web, exit 1 on the CLI."""


class Forbidden(DomainError):
    """The actor may not do this: 403."""


class Conflict(DomainError):
    """The request clashes with the current state (duplicate address, self-merge): 409/400."""
