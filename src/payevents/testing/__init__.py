"""Testing your own service against the real runtime (:class:`ServiceHarness`), and the CI rule of this
project's own tests (:mod:`payevents.testing.ci`)."""

from payevents.testing.harness import ServiceHarness

__all__ = ["ServiceHarness"]
