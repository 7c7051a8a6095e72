"""Render the catalog as a static site (plain HTML + one CSS file, relative links, no external assets)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jinja2

from payevents import __version__
from payevents.faces.catalog import samples
from payevents.faces.catalog.asyncapi import asyncapi_document
from payevents.faces.catalog.jsonfmt import dumps
from payevents.faces.catalog.model import Catalog, SchemaSource, build_catalog
from payevents.settings import Settings

_HERE = Path(__file__).parent


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json"] = lambda v: dumps(v)
    env.filters["fmtvalue"] = lambda v: json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
    return env


def event_page(event_type: str, version: str) -> str:
    """Site-relative path of one event version's page."""
    return f"events/{event_type}/{version}.html"


def legacy_page(event_type: str, version: str) -> str:
    """Site-relative path of a read-only legacy envelope's page."""
    return f"legacy/{event_type}/{version}.html"


def diff_page(event_type: str, old: str, new: str) -> str:
    return f"events/{event_type}/diff-{old}-{new}.html"


def build_site(out: Path, settings: Settings, source: SchemaSource | None = None) -> list[Path]:
    """Write the whole catalog site into ``out`` (created or refreshed); returns the files written."""
    catalog = build_catalog(settings, source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = _env()
    written: list[Path] = []

    def write(rel: str, text: str) -> None:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)

    def render(rel: str, template: str, **ctx: Any) -> None:
        root = "../" * rel.count("/")
        write(rel, env.get_template(template).render(root=root, catalog=catalog, version=__version__,
                                                      event_page=event_page, diff_page=diff_page,
                                                      legacy_page=legacy_page, **ctx))

    static = out / "static"
    static.mkdir(exist_ok=True)
    shutil.copyfile(_HERE / "static" / "catalog.css", static / "catalog.css")
    written.append(static / "catalog.css")

    render("index.html", "index.html.j2")
    processed = _sample_event(catalog)
    render(
        "channel.html",
        "channel.html.j2",
        ch=catalog.channel,
        sample_event_type=processed[0],
        payevents_sample=samples.payevents_sample(processed[1]),
        kafka_sample=samples.kafka_sample(processed[1], catalog.channel.partitions),
    )
    for e in catalog.events:
        render(f"events/{e.event_type}/index.html", "history.html.j2", e=e)
        for v in e.versions:
            write(f"events/{e.event_type}/{v.version}.schema.json", v.schema_json + "\n")
            render(event_page(e.event_type, v.version), "event.html.j2", e=e, v=v,
                   previous=e.previous_diff(v.version))
        for (old, new), d in e.diffs.items():
            render(diff_page(e.event_type, old, new), "diff.html.j2", e=e, d=d)
    for lg in catalog.legacy:
        write(f"{legacy_page(lg.event_type, lg.version).removesuffix('.html')}.schema.json", lg.schema_json + "\n")
        render(legacy_page(lg.event_type, lg.version), "legacy.html.j2", lg=lg)
    write("asyncapi.json", dumps(asyncapi_document(settings, catalog)) + "\n")
    return written


def _sample_event(catalog: Catalog) -> tuple[str, Any]:
    """The event the channel page's publishing examples send: the newest PaymentProcessed (or the first)."""
    try:
        e = catalog.event("PaymentProcessed")
    except KeyError:
        e = catalog.events[0]
    return e.event_type, e.latest.example or {}
