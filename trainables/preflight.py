"""Checks of a sweep's surroundings that need no Ray: run before Ray starts or anything is written (issue #12).

Everything the CLI's flags name on disk is checked here, so that a bad ``--results``, ``--storage-path`` or
``--mlflow-uri`` exits 2 with the path and the reason, instead of failing after Ray started and leaving a
half-made sweep behind:

- ``check_results_root(results, name, storage_path)``: the results root (and a local storage path) is a folder or
  can be created as one, is writable (probed with a temporary file, removed at once: root's permission bits lie),
  and ``<root>/<name>-NNN/<trial folders>`` fits the filesystem's name and path limits;
- ``check_tracking_uri(uri)``: an MLflow URI whose scheme MLflow knows; a local ``sqlite:///`` or ``file:`` store
  whose folder exists (or can be created) and is writable.

Every function raises ``PreflightError`` (a ``ValueError``) with one line per problem; none creates anything.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from imbgan_core.paths import folder_problems

TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "file")


class PreflightError(ValueError):
    """A path or URI given to the sweep CLI cannot be used; the message names it and says why."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n  ".join(self.problems))


def check_results_root(results: str | os.PathLike, name: str, storage_path: str | None = None) -> None:
    """Raise PreflightError unless ``results`` (and a local ``storage_path``) can hold the sweep folder ``name``."""
    problems = folder_problems(results, "--results", name)
    if storage_path and "://" not in storage_path:
        problems += folder_problems(storage_path, "--storage-path", name)
    if problems:
        raise PreflightError(problems)


def check_tracking_uri(uri: str) -> None:
    """Raise PreflightError unless MLflow can open ``uri``: a known scheme; a local store's folder usable."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+", 1)[0].lower()  # postgresql+psycopg2:// etc.
    if len(scheme) <= 1:  # a plain path (or a Windows drive letter): what MLflow calls a file store
        scheme, local = "file", uri
    elif scheme == "sqlite":  # sqlite:///relative/x.db, sqlite:////absolute/x.db (SQLAlchemy's form)
        local = unquote(uri.split("?", 1)[0][len(parsed.scheme) + len(":///"):]) if "///" in uri else ""
    elif scheme == "file":
        local = unquote(parsed.path)
    else:
        local = None
    if scheme not in TRACKING_SCHEMES:
        raise PreflightError([f"--mlflow-uri {uri}: unknown scheme {parsed.scheme!r} (expected one of "
                              f"{', '.join(TRACKING_SCHEMES)}, e.g. http://127.0.0.1:5000 or sqlite:///mlflow.db)"])
    if scheme in ("http", "https") and not parsed.netloc:
        raise PreflightError([f"--mlflow-uri {uri}: no host (e.g. http://127.0.0.1:5000)"])
    if local is None:
        return
    if scheme == "sqlite":
        if local in ("", "/", ":memory:"):
            raise PreflightError([f"--mlflow-uri {uri}: expected sqlite:///<path to a .db file>"])
        db = Path(local)
        if db.is_dir():
            raise PreflightError([f"--mlflow-uri {uri}: {db} is a directory, expected a sqlite database file"])
        if db.exists() and not db.is_file():
            raise PreflightError([f"--mlflow-uri {uri}: {db} is not a regular file"])
        problems = folder_problems(db.parent, f"--mlflow-uri {uri}: folder", None)
    else:
        problems = folder_problems(local, f"--mlflow-uri {uri}: folder", None)
    if problems:
        raise PreflightError(problems)
