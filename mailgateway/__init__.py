"""mailgateway: customers' email in, tickets in a database, agents' answers out as email."""

__version__ = "0.1.0"
