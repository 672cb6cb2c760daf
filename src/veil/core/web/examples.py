"""Example values for the OpenAPI document, taken from the schemas themselves.

A model that declares `examples` (pydantic's `json_schema_extra`, or `Field(examples=...)`) is shown
with its first one. Otherwise an example is built from the JSON schema: the first enum value, a
fixed uuid, a timestamp, base64 of the smallest byte length the field allows, numbers at their
minimum. tests/e2e/test_api_docs.py checks that every request example is accepted by its model, so
a built example that does not fit (a pattern it cannot satisfy, fields that exclude each other)
shows up there and gets a declared example instead.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

EXAMPLE_UUID = "0b6f0c3e-5d8a-4c1e-9f3a-7d2b8e4a6c10"
EXAMPLE_TIMESTAMP = "2026-12-07T09:30:00.000Z"
_STRING_FORMATS = {
    "uuid": EXAMPLE_UUID,
    "date-time": EXAMPLE_TIMESTAMP,
    "email": "ada@example.com",
    "uri": "https://veil.example/",
}
_MAX_DEPTH = 12


def example_of(schema: Mapping[str, Any], components: Mapping[str, Any], depth: int = 0) -> Any:
    """A value matching `schema`, whose `$ref`s point into `components` (`#/components/schemas`)."""
    if depth > _MAX_DEPTH:
        return None
    if "$ref" in schema:
        return example_of(components[schema["$ref"].rsplit("/", 1)[-1]], components, depth + 1)
    for declared in ("examples", "example", "const", "default", "enum"):
        if declared in schema:
            value = schema[declared]
            if declared in ("examples", "enum"):
                if value:
                    return value[0]
                continue
            if declared == "default" and value is None and "anyOf" in schema:
                break  # a nullable field: show a value rather than null
            return value
    if "properties" in schema:
        return _object(schema, components, depth)
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            options = [s for s in schema[combinator] if s.get("type") != "null"] or schema[combinator]
            return example_of(options[0], components, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return _object(schema, components, depth)
    if kind == "array":
        item = example_of(schema.get("items", {}), components, depth + 1)
        return [item] * max(1, int(schema.get("minItems", 1)))
    if kind == "integer":
        return int(schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1))
    if kind == "number":
        return schema.get("minimum", 0)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "string":
        return _string(schema)
    return {}


def _object(schema: Mapping[str, Any], components: Mapping[str, Any], depth: int) -> dict[str, Any]:
    """Every property, except where the object takes exactly one of several (`oneOf` of
    `required` lists): then the required ones and the first choice."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    names = list(properties)
    choices = schema.get("oneOf")
    if choices and all("required" in choice for choice in choices):
        chosen = {*schema.get("required", ()), *choices[0]["required"]}
        names = [name for name in names if name in chosen]
    return {name: example_of(properties[name], components, depth + 1) for name in names}


def _string(schema: Mapping[str, Any]) -> str:
    low, high = int(schema.get("minLength", 0)), int(schema.get("maxLength", 10_000))
    pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
    if schema.get("contentEncoding") == "base64":
        # The smallest byte length whose encoding fits the bounds and the pattern.
        for size in range(1, high):
            text = base64.b64encode(bytes(i % 251 for i in range(size))).decode()
            if low <= len(text) <= high and (pattern is None or pattern.search(text)):
                return text
    if "format" in schema and schema["format"] in _STRING_FORMATS:
        return _STRING_FORMATS[schema["format"]]
    for candidate in ("example", "Example text", "a" * max(low, 1)):
        if low <= len(candidate) <= high and (pattern is None or pattern.search(candidate)):
            return candidate
    return "x" * low
