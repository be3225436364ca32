"""The check of a domain's interaction file, RecBole's atomic ``<dataset>.inter`` file.

Format (what RecBole 1.0.1 reads; ``dataset_prep`` writes it)::

    user_id:token<TAB>item_id:token[<TAB>rating:float ...]
    u1<TAB>i7
    ...

UTF-8 text, one header line of ``name:type`` columns (type ``token``, ``token_seq``, ``float``
or ``float_seq``), then one row per interaction with as many fields as the header, separated
by the domain's ``field_separator`` (a tab). :func:`check_inter_file` finds what the framework
would otherwise turn into a traceback or into wrong data (a row with an extra field shifts
every column, a missing type suffix or a comma-separated file stops deep in pandas) and
raises :class:`InterFileError` naming the file, the line where one applies, and what was
expected. Numpy-free and framework-free: it reads the file as text.
"""

import os

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


class InterFileError(ValueError):
    """A domain's ``.inter`` file does not hold what the format above promises."""


def _show(separator):
    return {"\t": "tab", ",": "comma", " ": "space"}.get(separator, repr(separator))


def _header_fields(path, header, separator):
    """``[(name, type)]`` of the header line, or an error naming the bad column."""
    example = f"user_id:token{separator}item_id:token".replace("\t", "<TAB>")
    if separator not in header and "," in header and separator != ",":
        raise InterFileError(
            f"{path}: line 1: the columns are separated by commas; RecBole reads {_show(separator)}-"
            f"separated atomic files (field_separator), e.g. a header '{example}'"
        )
    fields = []
    for number, column in enumerate(header.split(separator), start=1):
        name, colon, kind = column.partition(":")
        if not name.strip():
            raise InterFileError(
                f"{path}: line 1: header column {number} has no name ({column!r}); every column "
                f"is 'name:type', e.g. '{example}' (an extra {_show(separator)} makes an unnamed column)"
            )
        if not colon:
            raise InterFileError(
                f"{path}: line 1: header column '{name}' has no type suffix: expected '{name}:token' "
                f"(or :{', :'.join(FIELD_TYPES[1:])}), as in '{example}'"
            )
        if kind not in FIELD_TYPES:
            raise InterFileError(
                f"{path}: line 1: header column '{column}' has type '{kind}': expected one of {', '.join(FIELD_TYPES)}"
            )
        fields.append((name, kind))
    names = [name for name, _ in fields]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InterFileError(f"{path}: line 1: header column '{repeated[0]}' appears more than once")
    return fields


def _lines(path, encoding):
    """``(line number, text)`` of each line (line ending removed); a byte that is not
    ``encoding`` is an error naming the line."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as error:
                bad = raw[error.start : error.start + 1].hex()
                raise InterFileError(
                    f"{path}: line {number}: byte 0x{bad} at column {error.start + 1} is not "
                    f"{encoding.upper()}; save the file as {encoding.upper()}"
                ) from None
            yield number, text.rstrip("\r\n")  # (text mode reads '\r\n' as a line end too)


def check_inter_file(path, user_field, item_field, load_columns=None, separator="\t", encoding="utf-8"):
    """Check the ``.inter`` file at ``path`` (format above): its header types every column
    and names ``user_field``, ``item_field`` and every column of ``load_columns`` (the
    domain's ``load_col['inter']``; None: every column), and it holds at least one row, each
    row with the header's number of fields. Returns the number of rows; raises
    :class:`InterFileError` naming the file (and line) otherwise."""
    if os.path.getsize(path) == 0:
        raise InterFileError(
            f"{path}: the file is empty: expected a header line such as "
            f"'user_id:token{separator}item_id:token'".replace("\t", "<TAB>")
            + " and one line per interaction"
        )
    rows = 0
    width = None
    for number, line in _lines(path, encoding):
        if width is None:
            fields = _header_fields(path, line, separator)
            width = len(fields)
            _require_columns(path, [name for name, _ in fields], user_field, item_field, load_columns)
            continue
        if not line:
            continue  # the framework skips blank lines
        count = line.count(separator) + 1
        if count != width:
            extra = " (an extra, unnamed column)" if count > width else ""
            raise InterFileError(
                f"{path}: line {number}: {count} fields, but the header has {width}"
                f"{extra}; fields are separated by one {_show(separator)} each"
            )
        rows += 1
    if rows == 0:
        raise InterFileError(f"{path}: no interactions: the file has a header line but no rows (an empty domain)")
    return rows


def _require_columns(path, names, user_field, item_field, load_columns):
    wanted = [(user_field, "USER_ID_FIELD"), (item_field, "ITEM_ID_FIELD")]
    wanted += [(column, "load_col") for column in (load_columns or [])]
    for column, key in wanted:
        if column not in names:
            raise InterFileError(
                f"{path}: line 1: no column '{column}' (the domain's {key}); the "
                f"header's columns are {', '.join(names)}"
            )
