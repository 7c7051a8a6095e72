"""Testing your own service against the real runtime (:class:`ServiceHarness`)."""

from payevents.testing.harness import ServiceHarness

__all__ = ["ServiceHarness"]
