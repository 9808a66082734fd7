"""Strict readers for TSV, CSV and JSON Lines: every malformed row is an error naming file and line.

Nothing is dropped silently; a reader either returns every row or raises DataError.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from edgeft.errors import DataError


def _open_text(path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found. Check the path (or the --data-file/--dev-file option).")
    try:
        # utf-8-sig drops the BOM that GLUE's MRPC files start with.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 text ({err}). Re-save the file as UTF-8.") from err


def read_tsv(path: Path, *, n_columns: int, header: bool) -> list[tuple[int, list[str]]]:
    """Rows of a GLUE-style TSV (no quoting) as (line number, fields); exactly n_columns each."""
    rows = []
    lines = _open_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, start=1):
        if header and lineno == 1:
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != n_columns:
            raise DataError(
                f"{path}:{lineno}: expected {n_columns} tab-separated columns, found {len(fields)}. "
                "Fix or remove this row."
            )
        rows.append((lineno, fields))
    return rows


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """Objects of a JSON Lines file as (line number, object); blank lines are errors, not skipped."""
    rows = []
    text = _open_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, start=1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg}). Fix or remove this line.") from err
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, found {type(obj).__name__}.")
        rows.append((lineno, obj))
    return rows


def read_table(path: Path) -> list[tuple[int, dict]]:
    """Rows of a user's CSV/TSV (with a header) as (line number, {column: value})."""
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    reader = csv.reader(io.StringIO(_open_text(path), newline=""), delimiter=delimiter)
    rows = []
    header = None
    for fields in reader:
        lineno = reader.line_num
        if header is None:
            header = [h.strip() for h in fields]
            continue
        if len(fields) != len(header):
            raise DataError(
                f"{path}:{lineno}: expected {len(header)} columns ({', '.join(header)}), found {len(fields)}. "
                "Fix or remove this row."
            )
        rows.append((lineno, dict(zip(header, fields))))
    if header is None:
        raise DataError(f"{path}: the file is empty; it needs a header row and at least one data row.")
    return rows


def read_records(path: Path) -> list[tuple[int, dict]]:
    """A user's data file by extension: .jsonl/.json lines, .csv or .tsv."""
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return read_jsonl(path)
    if suffix in (".csv", ".tsv", ".tab"):
        return read_table(path)
    raise DataError(f"{path}: unsupported file type '{suffix}'. Use .jsonl, .csv or .tsv.")


def require_field(path: Path, lineno: int, row: dict, key: str, *, allow_empty: bool = False) -> str:
    """The string value of `key` in a record, or a DataError naming file, line and field."""
    if key not in row:
        raise DataError(f"{path}:{lineno}: missing field '{key}' (fields present: {', '.join(row)}).")
    value = row[key]
    if value is None or (isinstance(value, str) and not allow_empty and not value.strip()):
        raise DataError(f"{path}:{lineno}: field '{key}' is empty.")
    if not isinstance(value, (str, int, float)):
        raise DataError(f"{path}:{lineno}: field '{key}' must be text or a number, found {type(value).__name__}.")
    return str(value)
