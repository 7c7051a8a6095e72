"""Faces: the CLI, the HTTP API + dashboard, the generated catalog. Thin layers over services."""
