"""payevents: the payments.{env}.events channel, its contracts, and the services that act on it."""

__version__ = "0.1.0"
