"""Values made plain for JSON (records, trial lines, caches, run results)."""


def jsonable(value):
    """``value`` with JSON's types only.

    Dicts keep their order with keys as ``str``; lists and tuples become lists; numpy and
    torch scalars and arrays become Python numbers and (nested) lists; ``str``, ``int``,
    ``float`` (NaN and infinities included), ``bool`` and ``None`` stay; anything else
    becomes its ``str``.
    """
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return jsonable(value.tolist())
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
