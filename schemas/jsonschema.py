"""The JSON Schema documents of the wire models, kept in `schemas/json/` for producers."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.events import SCHEMA_MODELS

SCHEMA_DIR = Path(__file__).parent / "json"


def render_schemas() -> dict[str, str]:
    """File name -> JSON text, exactly as it is kept in the repository
    (tests/test_schemas.py::test_json_schemas_in_repo_are_current)."""
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True)
        + "\n"
        for name, model in SCHEMA_MODELS.items()
    }


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
