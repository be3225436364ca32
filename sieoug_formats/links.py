"""The hidden links of a pair's de-linked users: ``<pair>.links.tsv``.

A pair built with an overlap ratio K_u < 1 splits the two identities of some common users (to
every model they are two people). Each such user's true link is one line, tab-separated, under
the header :data:`LINK_HEADER`: its source token and its target token. Data preparation writes
the file beside the pair; training never reads it, diagnostics do
(:mod:`sieoug_recbole.link_diagnostics`).
"""

import contextlib
import csv
import os

LINK_HEADER = ("source_user_id:token", "target_user_id:token")


class LinkFileError(ValueError):
    """A link file that cannot be read, or names users the pair does not have."""


def links_path(data_path, pair):
    """``<data_path>/<pair>.links.tsv``."""
    return os.path.join(data_path, f"{pair}.links.tsv")


def write_links(path, links):
    """Write ``links`` [(source token, target token), ...] to ``path`` (atomically); removes
    the file and returns None when there are none, else returns the file's name."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    if not links:
        return None
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(LINK_HEADER) + "\n")
        f.writelines(f"{source}\t{target}\n" for source, target in sorted(links))
    os.replace(tmp, path)
    return os.path.basename(path)


def read_links(path):
    """[(source token, target token), ...] of a link file; :class:`LinkFileError` naming the
    file (and line) for a missing file, a wrong header or a malformed line."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
    except OSError as exc:
        raise LinkFileError(f"link file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise LinkFileError(f"link file {path}: not UTF-8 ({exc.reason})") from None
    if not rows or tuple(rows[0]) != LINK_HEADER:
        raise LinkFileError(f"link file {path}: the first line must be the header {chr(9).join(LINK_HEADER)!r}")
    links = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0] or not row[1]:
            raise LinkFileError(f"link file {path}: line {number}: expected two tab-separated user tokens, got {row!r}")
        links.append((row[0], row[1]))
    return links
