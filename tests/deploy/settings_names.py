"""Which environment variable names mpp.config.Settings reads.

pydantic-settings ignores unknown ``MPP_`` variables (``extra="ignore"``), so a misspelt name in
the chart would silently leave a default in place; these helpers walk the model instead.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

from mpp.config import Settings

PREFIX = Settings.model_config.get("env_prefix", "")
DELIMITER = Settings.model_config.get("env_nested_delimiter") or "__"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside an annotation such as ``KafkaSettings`` or ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def setting_field(env_name: str) -> tuple[str, ...] | None:
    """The field path (``("kafka", "topics", "partitions")``) an ``MPP_`` variable sets, or
    None when Settings has no such field."""
    if not env_name.upper().startswith(PREFIX.upper()):
        return None
    parts = env_name[len(PREFIX) :].lower().split(DELIMITER)
    model: type[BaseModel] | None = Settings
    for index, part in enumerate(parts):
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        if index < len(parts) - 1:
            model = _model_of(annotation)
    return tuple(parts)


def literal_values(*path: str) -> set[str]:
    """The allowed values of a ``Literal`` field (``X | None`` unwrapped), as strings."""
    model: type[BaseModel] = Settings
    for part in path[:-1]:
        inner = _model_of(model.model_fields[part].annotation)
        assert inner is not None, f"{part} is not a section"
        model = inner
    annotation = model.model_fields[path[-1]].annotation
    values: set[str] = set()
    stack = [annotation]
    while stack:
        current = stack.pop()
        if typing.get_origin(current) is typing.Literal:
            values.update(str(v) for v in typing.get_args(current))
        else:
            stack.extend(typing.get_args(current))
    assert values, f"{'.'.join(path)} is not a Literal field"
    return values


def is_path_setting(env_name: str) -> bool:
    """Whether the variable sets a ``Path`` field (a file the pod must have)."""
    from pathlib import Path

    path = setting_field(env_name)
    if path is None:
        return False
    model: type[BaseModel] = Settings
    for part in path[:-1]:
        inner = _model_of(model.model_fields[part].annotation)
        assert inner is not None
        model = inner
    annotation = model.model_fields[path[-1]].annotation
    return annotation is Path or Path in typing.get_args(annotation)
