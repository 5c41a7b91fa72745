"""MkDocs hooks: the reference pages are generated from the code at every build, so they cannot go stale.

A page holds a marker; `on_page_markdown` replaces it:
- `<!-- kidsart:cli -->`: every `kidsart` command with its options, defaults and help (the typer app);
- `<!-- kidsart:config -->`: every profile, training and district-job setting with its type, default, bounds and
  description (the pydantic models' fields);
- `<!-- kidsart:http -->`: every route of the router with its request and answer models (FastAPI's OpenAPI
  document, the one `/openapi.json` serves).
"""

from __future__ import annotations

import json

MARKERS = {"<!-- kidsart:cli -->": "cli", "<!-- kidsart:config -->": "config", "<!-- kidsart:http -->": "http"}


def on_page_markdown(markdown: str, page, config, files) -> str:
    for marker, name in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, GENERATORS[name]())
    return markdown


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


# ---- CLI --------------------------------------------------------------------------------------------------------


def cli_reference() -> str:
    import click
    import typer

    from kidsart.cli import app

    root = typer.main.get_command(app)
    ctx = click.Context(root, info_name="kidsart")
    out = []
    for name in sorted(root.list_commands(ctx)):
        command = root.get_command(ctx, name)
        out.append(f"## `kidsart {name}`\n\n{(command.help or '').strip()}\n")
        rows = []
        for param in command.params:
            if param.name == "help":
                continue
            if param.param_type_name == "argument":
                flag = f"`{param.name.upper()}` (argument)"
            else:
                flag = ", ".join(f"`{o}`" for o in [*param.opts, *getattr(param, "secondary_opts", [])])
            default = "" if param.required or param.default is None else f"`{param.default}`"
            rows.append(
                f"| {flag} | {default or ('required' if param.required else '')} | "
                f"{_cell(getattr(param, 'help', '') or '')} |"
            )
        if rows:
            out.append("| option | default | what |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    return "\n".join(out)


# ---- configuration ----------------------------------------------------------------------------------------------


def _type_name(annotation) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("NoneType", "None")


def _bounds(field) -> str:
    parts = []
    for item in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
    return ", ".join(parts)


def _default(field) -> str:
    from pydantic_core import PydanticUndefined

    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if hasattr(value, "model_dump"):
        return "(see below)"
    return f"`{json.dumps(value, default=str)}`"


def _model_table(model, seen: set) -> tuple[str, list]:
    from pydantic import BaseModel

    rows, nested = [], []
    for name, field in model.model_fields.items():
        rows.append(
            f"| `{name}` | {_cell(_type_name(field.annotation))} | {_cell(_default(field))} | "
            f"{_cell(_bounds(field))} | {_cell(field.description or '')} |"
        )
        for candidate in getattr(field.annotation, "__args__", ()) or (field.annotation,):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate not in seen:
                seen.add(candidate)
                nested.append(candidate)
    doc = (model.__doc__ or "").strip().split("\n\n")[0]
    table = "| field | type | default | bounds | what |\n|---|---|---|---|---|\n" + "\n".join(rows)
    return f"### `{model.__name__}`\n\n{doc}\n\n{table}\n", nested


def config_reference() -> str:
    from adapters.profiles import Profile
    from serve.client import RetryPolicy
    from serve.district.job import DistrictJobConfig
    from train.config import TrainConfig

    sections = [
        ("Profiles (`adapters/profiles/*.yaml`)", Profile),
        ("Training (`train/configs/*.yaml`)", TrainConfig),
        ("The district job (`kidsart score-district`)", DistrictJobConfig),
        ("Client retries (`serve.client.RetryPolicy`)", RetryPolicy),
    ]
    out, seen = [], set()
    for title, root in sections:
        out.append(f"## {title}\n")
        pending = [root]
        seen.add(root)
        while pending:
            text, nested = _model_table(pending.pop(0), seen)
            out.append(text)
            pending.extend(nested)
    return "\n".join(out)


# ---- HTTP API ---------------------------------------------------------------------------------------------------


def _schema_name(schema: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    return schema.get("title") or schema.get("type", "object")


def http_reference() -> str:
    from serve.router import api

    spec = api.openapi()
    out = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            out.append(f"## `{method.upper()} {path}`\n")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                out.append(f"Request body: `{_schema_name(body)}` (JSON).\n")
            answers = []
            for status, response in sorted(operation.get("responses", {}).items()):
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                answers.append(f"`{status}` {_schema_name(schema) if schema else response.get('description', '')}")
            out.append("Answers: " + ", ".join(answers) + ".\n")
    out.append("## Models\n")
    schemas = dict(spec.get("components", {}).get("schemas", {}))
    for path_item in spec["paths"].values():
        for operation in path_item.values():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body and "title" in body:
                schemas.setdefault(body["title"], body)
    for name in sorted(schemas):
        if name in ("HTTPValidationError", "ValidationError"):
            continue
        schema = schemas[name]
        rows = []
        required = set(schema.get("required", []))
        for field, prop in schema.get("properties", {}).items():
            kind = (
                _schema_name(prop)
                if "$ref" in prop
                else prop.get("type")
                or " or ".join(_schema_name(p) if "$ref" in p else p.get("type", "?") for p in prop.get("anyOf", []))
            )
            rows.append(
                f"| `{field}` | {_cell(kind)} | {'yes' if field in required else ''} | "
                f"{_cell(prop.get('description', ''))} |"
            )
        description = _cell(schema.get("description", "")).split("  ")[0]
        out.append(
            f"### `{name}`\n\n{description}\n\n| field | type | required | what |\n|---|---|---|---|\n"
            + "\n".join(rows)
            + "\n"
        )
    return "\n".join(out)


GENERATORS = {"cli": cli_reference, "config": config_reference, "http": http_reference}
