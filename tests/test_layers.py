"""No module imports a higher layer (docs/architecture.md, "Layers"): the direction of every import inside
``src/payevents`` is checked from the source, including imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
#: lower number = lower layer; a module may import its own layer and the ones below
LAYERS = {
    "contracts": 0, "errors": 0,
    "settings": 1, "sqlitelock": 1,
    "transport": 2, "store": 2, "localkafka": 2,
    "runtime": 3,
    "consuming": 4, "publishing": 4,
    "services": 5,
    "testing": 6,
    "bench": 7, "faces": 7,
}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "payevents" and len(parts) > 1 and parts[1] in LAYERS else None


def test_every_top_level_module_has_a_layer() -> None:
    names = {p.stem if p.is_file() else p.name for p in (SRC / "payevents").iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())) and p.stem != "__init__"}
    assert names <= set(LAYERS), f"add these to LAYERS (and to the architecture's table): {names - set(LAYERS)}"


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for path in (SRC / "payevents").rglob("*.py"):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts)
        me = _layer(module)
        if me is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                       else [])
            for target in targets:
                other = _layer(target)
                if other is not None and LAYERS[other] > LAYERS[me]:
                    upward.append(f"{module} imports {target}")
    assert upward == []
