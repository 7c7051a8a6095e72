"""The event catalog, generated from the code: a static site and one AsyncAPI 3.0 document.

Nothing here is hand-written documentation: the channel comes from :mod:`payevents.contracts.channel`,
the events from the published JSON Schemas and examples, producers and consumers from the service
registrations (``load_service(name).handlers``), so the catalog cannot drift from what runs.
"""

from __future__ import annotations

from payevents.faces.catalog.asyncapi import asyncapi_document, inline_schema
from payevents.faces.catalog.diff import Change, SchemaDiff, diff_schemas
from payevents.faces.catalog.model import Catalog, SchemaSource, build_catalog
from payevents.faces.catalog.schema import PropertyRow, count_properties, property_rows
from payevents.faces.catalog.site import build_site

__all__ = [
    "Catalog",
    "Change",
    "PropertyRow",
    "SchemaDiff",
    "SchemaSource",
    "asyncapi_document",
    "build_catalog",
    "build_site",
    "count_properties",
    "diff_schemas",
    "inline_schema",
    "property_rows",
]
