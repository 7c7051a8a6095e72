"""Puts this example's folder on sys.path (pytest's default import mode inserts a conftest's folder), so the
tests import ``velocity_check`` without installing the package."""
