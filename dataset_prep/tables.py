"""Reading the generic input tables, with errors that name the file, the line and the column.

A table is a delimited text file with a header row, optionally compressed (``.gz``, ``.xz``,
``.bz2``, ``.zip``; pandas infers it from the name). The separator is a tab for ``.tsv`` /
``.txt`` names and a comma for ``.csv`` names unless given. Tab-separated files are read
without quote processing (a ``"`` in a title is an ordinary character); comma-separated files
use standard CSV quoting. Every cell is read as text; nothing is turned into NaN silently.

Line numbers in messages count the header as line 1, so data row ``i`` (0-based) is line
``i + 2`` (exact unless a quoted CSV field spans several lines).
"""

import csv
import os

import numpy as np
import pandas as pd

from dataset_prep.errors import PrepError

_COMPRESSED = (".gz", ".xz", ".bz2", ".zip")


def _strip_compression(path):
    name = os.path.basename(path).lower()
    for ext in _COMPRESSED:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def guess_separator(path):
    """Tab for ``.tsv``/``.txt`` (possibly compressed), comma for ``.csv``; else tab."""
    return "," if _strip_compression(path).endswith(".csv") else "\t"


def read_table(path, sep=None, what="table"):
    """Read ``path`` as a DataFrame of strings (header row required); ``what`` names it in errors."""
    if not os.path.isfile(path):
        raise PrepError(f"{what} file not found: {path}")
    sep = guess_separator(path) if sep is None else sep
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    try:
        df = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            quoting=quoting,
            engine="c",
            encoding="utf-8",
        )
    except pd.errors.EmptyDataError:
        raise PrepError(f"{what} file {path} is empty (a header row is required)") from None
    except pd.errors.ParserError as exc:
        raise PrepError(f"{what} file {path} is malformed: {exc}") from None
    except UnicodeDecodeError as exc:
        raise PrepError(f"{what} file {path} is not UTF-8 text ({exc})") from None
    except (OSError, EOFError, ValueError) as exc:  # a truncated .gz, a bad archive, ...
        raise PrepError(f"{what} file {path} cannot be read: {exc}") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df.reset_index(drop=True)


def require_columns(df, path, wanted, what="table"):
    """Raise unless every column in ``wanted`` is in ``df``.

    ``wanted`` is a dict or a list of ``(option, column name)`` pairs.

    The message lists the missing names, the option that sets each, and the columns the
    file does have.
    """
    pairs = wanted.items() if isinstance(wanted, dict) else wanted
    missing = [(opt, col) for opt, col in pairs if col not in df.columns]
    if missing:
        miss = ", ".join(f"'{col}' (set by {opt})" for opt, col in missing)
        have = ", ".join(f"'{c}'" for c in df.columns)
        raise PrepError(f"{what} file {path}: missing column(s) {miss}; the file has columns: {have}")


def line_of(row_index):
    """1-based line number in the file of 0-based data row ``row_index`` (header = line 1)."""
    return int(row_index) + 2


def parse_numbers(values, path, column, lines=None, what="table"):
    """``values`` (strings) as float64; the first unparsable value is an error naming its line.

    ``lines`` gives the file line of each value (default: the values are the file's rows in order).
    """
    text = pd.Series(values, dtype=str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers)
    if bad.any():
        rows = np.flatnonzero(bad)
        first = int(rows[0])
        line = line_of(first) if lines is None else int(np.asarray(lines)[first])
        raise PrepError(
            f"{what} file {path}, line {line}: value {text.iloc[first]!r} in column "
            f"'{column}' is not a finite number ({len(rows)} such row(s) in the file)"
        )
    return numbers
