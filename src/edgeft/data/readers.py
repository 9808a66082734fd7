"""Strict readers for TSV, CSV and JSON Lines: every malformed row is an error naming file and line.

Nothing is dropped silently; a reader either returns every row or raises DataError.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path

from edgeft.errors import DataError


def _refuse_a_folder(path: Path) -> None:
    """A folder given as the data file said 'not found', though it is there."""
    if path.is_dir():
        raise DataError(f"{path}: a folder, not a data file; give the file itself (a .jsonl, .csv or .tsv in it).")


def _open_text(path: Path) -> str:
    """The file's text, new lines as \\n; one in another encoding is an error naming it (UTF-16, UTF-32) or the line
    of its first bad byte, and a NUL (UTF-16 without a byte order mark reads as UTF-8 with a NUL in every other
    byte) is refused too."""
    path = Path(path).expanduser()
    _refuse_a_folder(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found. Check the path (or the --data-file/--dev-file option).")
    try:
        data = path.read_bytes()
    except OSError as err:  # no read permission, a vanished network file: was a bare traceback
        raise DataError(f"{path}: cannot be read ({err.strerror or err}); check its permissions.") from None
    # The BOM that GLUE's MRPC files start with is dropped; decoding the rest at once puts a bad byte on its line.
    body = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        for bom, wide in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                          (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
            if data.startswith(bom):
                raise DataError(f"{path}: the file is {wide} text (it starts with a {wide} byte order mark); edgeft "
                                f"reads UTF-8. Re-save it as UTF-8, e.g. iconv -f {wide} -t UTF-8 {path}") from None
        line = body.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{body[err.start]:02x}); the file is in another "
                        f"encoding. Re-save the file as UTF-8, e.g. from Windows-1252/Latin-1: "
                        f"iconv -f CP1252 -t UTF-8 {path}") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # every line end as \n, as text mode reads them
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataError(f"{path}:{line}: NUL character in the text; is the file UTF-16 (without a byte order mark)? "
                        f"Re-save it as UTF-8, e.g. iconv -f UTF-16LE -t UTF-8 {path}")
    return text


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


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's dict, refusing a key given twice (json keeps the last silently, so a row would be mis-read)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


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
            obj = json.loads(line, object_pairs_hook=_unique_keys)
        except _DuplicateKey as err:
            raise DataError(f"{path}:{lineno}: the key '{err}' appears twice in this object; JSON keeps only the "
                            "last, so keep one.") from None
        except json.JSONDecodeError as err:
            if lineno == 1 and line.strip() == "{":
                raise DataError(f"{path}:1: a JSON object spread over several lines; edgeft reads JSON Lines, one "
                                f"whole object per line. Convert it, e.g. jq -c . {path} > "
                                f"{Path(path).with_suffix('.jsonl')}") from err
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


_TSV = "Write the file without quoting (csv.QUOTE_NONE; pandas: quoting=3), or as a .csv, which edgeft unquotes"


def read_table(path: Path) -> list[tuple[int, dict]]:
    """Rows of a user's CSV/TSV (with a header) as (line number, {column: value}).

    A .tsv/.tab file is read line by line without quote handling (see _tsv_rows); a .csv follows RFC 4180. A TSV
    that a CSV writer quoted (pandas' to_csv(sep='\t') wraps a field holding a quote, tab or new line in quotes) is
    refused at its first such row rather than read with the quotes as text.
    """
    path = Path(path)
    tsv = path.suffix.lower() in (".tsv", ".tab")
    if tsv:
        table = [(lineno, lineno, fields) for lineno, fields in _tsv_rows(path)]
    else:
        table = _csv_rows(path)
    if not table:
        raise DataError(f"{path}: the file is empty; it needs a header row and at least one data row.")
    header = [h.strip() for h in table[0][2]]
    if not any(header):
        raise DataError(f"{path}:1: the first line is blank; it must be the header (the column names). Remove the "
                        "blank line(s) above it.")
    if len(header) == 1 and ";" in header[0] and path.suffix.lower() == ".csv":
        raise DataError(f"{path}:1: the header '{header[0]}' is one column with ';' in it: the file looks "
                        "semicolon-separated (as Excel writes CSV in some locales); edgeft reads comma-separated "
                        "CSV. Re-save it with commas (or as .tsv with tabs).")
    named = [h for h in header if h]  # unnamed columns (an export's trailing commas) are never read by name
    twice = next((h for i, h in enumerate(named) if h in named[:i]), None)
    if twice is not None:
        raise DataError(f"{path}:1: the header names the column '{twice}' twice ({', '.join(header)}); only one "
                        "could be read. Give each column its own name (rename or remove one).")
    rows = []
    for first, last, fields in table[1:]:
        if not fields or (fields == [""] and len(header) > 1):
            raise DataError(f"{path}:{first}: a blank line (every line after the header is one row of "
                            f"{len(header)} column{'s' * (len(header) > 1)}). Remove it.")
        if tsv and any(len(f) > 2 and f[0] == f[-1] == '"' and '""' in f[1:-1] for f in fields):
            raise DataError(f"{path}:{first}: a field in double quotes with doubled quotes inside, as a CSV writer "
                            "quotes it; edgeft reads a .tsv as written (GLUE's way), so the quotes would be read as "
                            f"text. {_TSV}.")
        if len(fields) != len(header):
            span = f" (this row runs from line {first} to {last}: is a double quote left open?)" if last > first else ""
            if len(fields) > len(header) and path.suffix.lower() == ".csv" and not span:
                span = " (a field that holds a comma must be in double quotes: \"like, this\")"
            if tsv and any(f[:1] == '"' for f in fields):
                span = f" (a .tsv is read without quote handling, so a quoted tab still splits the row. {_TSV})"
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
    _refuse_a_folder(Path(path).expanduser())
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return read_jsonl(path)
    if suffix in (".csv", ".tsv", ".tab"):
        return read_table(path)
    if suffix in TEXT_SUFFIXES:
        raise DataError(f"{path}: plain text is for language modelling: it is read as --task-kind lm (the "
                        "default for a .txt/.md file); a classification, regression or generation task takes a "
                        ".jsonl, .csv or .tsv file.")
    raise DataError(f"{path}: unsupported file type '{suffix}'. Use .jsonl, .csv or .tsv (or .txt/.md: plain text, "
                    "for language modelling).")


TEXT_SUFFIXES = (".txt", ".md", ".text")  # a user's plain text: language modelling, one document per paragraph


def read_paragraphs(path: Path) -> list[tuple[int, str]]:
    """(first line, text) of each paragraph of a plain-text file (paragraphs end at a blank line), read as every
    user file is (encodings, NUL bytes and folders refused by name)."""
    out, start, current = [], 0, []
    for lineno, line in enumerate(_open_text(path).split("\n"), 1):
        if line.strip():
            start = start or lineno
            current.append(line)
        elif current:
            out.append((start, "\n".join(current)))
            start, current = 0, []
    if current:
        out.append((start, "\n".join(current)))
    if not out:
        raise DataError(f"{path}: no text (the file is empty or blank).")
    return out


def require_field(path: Path, lineno: int, row: dict, key: str, *, allow_empty: bool = False,
                  column_option: str | None = None) -> str:
    """The string value of `key` in a record, or a DataError naming file, line and field (and, for a user's file,
    `column_option`: the TaskConfig key that names this column, so the error says how to point edgeft at another)."""
    if key not in row:
        hint = (f" If the column has another name, give it with --{column_option.replace('_', '-')} "
                f"(task.{column_option} in a config file)." if column_option else "")
        raise DataError(f"{path}:{lineno}: missing field '{key}' (fields present: {', '.join(row)}).{hint}")
    value = row[key]
    if value is None and allow_empty:  # JSON's null in an optional field (an input, a category): nothing there
        return ""
    if value is None or (isinstance(value, str) and not allow_empty and not value.strip()):
        raise DataError(f"{path}:{lineno}: field '{key}' is empty; fill it in or remove this row.")
    if not isinstance(value, (str, int, float)):
        raise DataError(f"{path}:{lineno}: field '{key}' must be text or a number, found {type(value).__name__}.")
    return str(value)
