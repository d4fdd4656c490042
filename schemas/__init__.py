"""The OpenHES XSDs and WSDLs (IEC 61968-100 envelope, IEC 61968-9 payload profiles and
per-noun SOAP wrappers), shipped as package data.

Schema validation lives in :mod:`cim.validation`; this module only locates the files.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path


def schema_dir() -> Path:
    """The folder holding the schema files (a real directory in every supported install)."""
    root = files(__name__)
    if not isinstance(root, Path):
        raise RuntimeError("the OpenHES schemas package is not installed on a file system")
    return root


def schema_path(name: str) -> Path:
    """Path of one schema file by its file name, e.g. ``schema_path("Message.xsd")``."""
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise ValueError(f"not a schema file name: {name!r}")
    path = schema_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"no schema file {name!r} in the OpenHES schemas package")
    return path


def schema_names(suffix: str = "") -> list[str]:
    """File names of the shipped schemas, sorted; ``suffix`` filters (".xsd", ".wsdl")."""
    entries: list[Traversable] = list(files(__name__).iterdir())
    return sorted(
        entry.name
        for entry in entries
        if entry.name.endswith((".xsd", ".wsdl")) and entry.name.endswith(suffix)
    )
