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


def _tsv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Every line of a TSV as (line number, tab-split fields): no quote handling, as GLUE writes them.

    A csv reader would join lines after a field that starts with a bare `"`, putting later errors on the
    wrong line; GLUE text holds such quotes, so each physical line is one row here.
    """
    lines = _open_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [(lineno, line.rstrip("\r").split("\t")) for lineno, line in enumerate(lines, start=1)]


def read_tsv(path: Path, *, n_columns: int, header: bool) -> list[tuple[int, list[str]]]:
    """Rows of a GLUE-style TSV (no quoting) as (line number, fields); exactly n_columns each."""
    rows = []
    for lineno, fields in _tsv_rows(path):
        if header and lineno == 1:
            continue
        if len(fields) != n_columns:
            raise DataError(
                f"{path}:{lineno}: expected {n_columns} tab-separated columns, found {len(fields)}. "
                "Fix or remove this row."
            )
        rows.append((lineno, fields))
    return rows


def _is_json_array(text: str) -> bool:
    try:
        return isinstance(json.loads(text), list)
    except json.JSONDecodeError:
        return False


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """Objects of a JSON Lines file as (line number, object); blank lines are errors, not skipped."""
    rows = []
    text = _open_text(path)
    if text.lstrip().startswith("[") and _is_json_array(text):  # how Alpaca-style .json data often comes
        raise DataError(f"{path}: the file is one JSON array; edgeft reads JSON Lines, one object per line. "
                        f"Convert it, e.g. jq -c '.[]' {path} > {Path(path).with_suffix('.jsonl')}")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, start=1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            what = "a blank line (a JSON Lines file has one object on every line)" if not line.strip() else \
                f"not valid JSON ({err.msg})"
            raise DataError(f"{path}:{lineno}: {what}. Fix or remove this line.") from err
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, found {type(obj).__name__}.")
        rows.append((lineno, obj))
    return rows


def _csv_rows(path: Path) -> list[tuple[int, int, list[str]]]:
    """Rows of a CSV as (first line, last line, fields); a quoted field may span lines."""
    text = _open_text(path)
    # No field can be longer than the file: lift csv's 128 KiB default for this read only.
    old_limit = csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        rows, start = [], 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return rows
            except csv.Error as err:
                hint = ": a double quote opened in this row is never closed" if "end of data" in str(err) else ""
                raise DataError(f"{path}:{start}: not valid CSV ({err}{hint}). Fix this row.") from None
            rows.append((start, reader.line_num, fields))
            start = reader.line_num + 1
    finally:
        csv.field_size_limit(old_limit)


def read_table(path: Path) -> list[tuple[int, dict]]:
    """Rows of a user's CSV/TSV (with a header) as (line number, {column: value}).

    A .tsv/.tab file is read line by line without quote handling (see _tsv_rows); a .csv follows RFC 4180.
    """
    path = Path(path)
    if path.suffix.lower() in (".tsv", ".tab"):
        table = [(lineno, lineno, fields) for lineno, fields in _tsv_rows(path)]
    else:
        table = _csv_rows(path)
    if not table:
        raise DataError(f"{path}: the file is empty; it needs a header row and at least one data row.")
    header = [h.strip() for h in table[0][2]]
    rows = []
    for first, last, fields in table[1:]:
        if len(fields) != len(header):
            span = f" (this row runs from line {first} to {last}: is a double quote left open?)" if last > first else ""
            raise DataError(
                f"{path}:{first}: expected {len(header)} columns ({', '.join(header)}), found {len(fields)}{span}. "
                "Fix or remove this row."
            )
        rows.append((first, dict(zip(header, fields))))
    if not rows:
        raise DataError(f"{path}: the file has a header row ({', '.join(header)}) but no data rows; add rows below it.")
    return rows


def read_records(path: Path) -> list[tuple[int, dict]]:
    """A user's data file by extension: .jsonl/.json lines, .csv or .tsv."""
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return read_jsonl(path)
    if suffix in (".csv", ".tsv", ".tab"):
        return read_table(path)
    raise DataError(f"{path}: unsupported file type '{suffix}'. Use .jsonl, .csv or .tsv.")


def require_field(path: Path, lineno: int, row: dict, key: str, *, allow_empty: bool = False,
                  column_option: str | None = None) -> str:
    """The string value of `key` in a record, or a DataError naming file, line and field (and, for a user's file,
    `column_option`: the TaskConfig key that names this column, so the error says how to point edgeft at another)."""
    if key not in row:
        hint = (f" If the column has another name, give it with --{column_option.replace('_', '-')} "
                f"(task.{column_option} in a config file)." if column_option else "")
        raise DataError(f"{path}:{lineno}: missing field '{key}' (fields present: {', '.join(row)}).{hint}")
    value = row[key]
    if value is None or (isinstance(value, str) and not allow_empty and not value.strip()):
        raise DataError(f"{path}:{lineno}: field '{key}' is empty; fill it in or remove this row.")
    if not isinstance(value, (str, int, float)):
        raise DataError(f"{path}:{lineno}: field '{key}' must be text or a number, found {type(value).__name__}.")
    return str(value)
