"""Amazon review dumps (2018 release, McAuley et al.) -> the generic tables of :mod:`.convert`.

Input per domain, one JSON object per line, plain or ``.gz``:

- reviews (``<Category>.json[.gz]``): ``reviewerID``, ``asin``, ``overall`` (1-5),
  ``unixReviewTime`` (seconds);
- metadata (``meta_<Category>.json[.gz]``): ``asin``, ``title``, ``description`` (a list of
  strings or a string), ``imageURL`` / ``imageURLHighRes`` (lists of URLs). The 2014
  release's metadata lines (Python dict literals with ``imUrl``) are read too.

Output per domain ``D`` in ``--out``: ``D.inter.tsv`` (``user item rating timestamp``) and
``D.items.tsv`` (``item title description image_url``), plus ``amazon_summary.json`` with
every skipped line counted by reason. Texts are cleaned: HTML tags removed, entities
unescaped, whitespace (tabs, newlines) collapsed to single spaces.

A line that is not valid JSON, or a review without one of its four fields, is an error naming
the file and line, unless ``--skip-bad-lines`` (then it is skipped and counted).

:func:`download_images` fetches each item's ``image_url`` into a folder (resumable: files
already there are skipped; failures are counted and listed, not fatal) and adds an
``image_path`` column (relative to the item table) for the ``clip-image`` encoder.
"""

import ast
import gzip
import html
import json
import os
import re
import shutil
import urllib.parse
import urllib.request

import pandas as pd
from tqdm.auto import tqdm

from dataset_prep.errors import PrepError
from dataset_prep.tables import read_table, require_columns

REVIEW_FIELDS = ("reviewerID", "asin", "overall", "unixReviewTime")
_TAG_RE = re.compile(r"<[^>]+>")
_SPACE_RE = re.compile(r"\s+")
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def _open_text(path):
    if not os.path.isfile(path):
        raise PrepError(f"file not found: {path}")
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def iter_json_lines(path, skip_bad=False, counts=None, progress=False, desc=None):
    """Yield ``(line_number, dict)`` for each non-blank line of a JSON-lines file (.gz ok).

    Lines that JSON cannot read are tried as Python literals (the 2014 metadata format).
    A line that neither reads is a :class:`PrepError` naming file and line, or, with
    ``skip_bad``, skipped and counted in ``counts['bad_json']``.
    """
    with _open_text(path) as handle:
        try:
            for number, line in enumerate(
                tqdm(handle, desc=desc or os.path.basename(path), unit=" lines", disable=not progress, leave=False),
                start=1,
            ):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    try:
                        record = ast.literal_eval(line)
                    except (ValueError, SyntaxError, MemoryError, RecursionError):
                        record = None
                if not isinstance(record, dict):
                    if skip_bad:
                        if counts is not None:
                            counts["bad_json"] = counts.get("bad_json", 0) + 1
                        continue
                    raise PrepError(
                        f"{path}, line {number}: not a JSON object ({line[:60]!r}...); "
                        "use --skip-bad-lines to skip and count such lines"
                    )
                yield number, record
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise PrepError(f"{path}: cannot be read ({exc})") from None


def clean_text(value):
    """A list or string -> one line of text: tags removed, entities unescaped, spaces collapsed."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(clean_text(v) for v in value)
    text = html.unescape(_TAG_RE.sub(" ", str(value)))
    return _SPACE_RE.sub(" ", text).strip()


def _first_url(record):
    for key in ("imageURLHighRes", "imageURL", "imUrl"):
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, (list, tuple)):
            for url in value:
                if isinstance(url, str) and url.strip():
                    return url.strip()
    return ""


def read_reviews(path, skip_bad=False, progress=False):
    """The review dump as a DataFrame ``user item rating timestamp`` and the skip counts."""
    counts = {"lines": 0, "bad_json": 0, "missing_field": 0, "bad_number": 0}
    rows = []
    for number, record in iter_json_lines(path, skip_bad, counts, progress):
        counts["lines"] += 1
        missing = [f for f in REVIEW_FIELDS if record.get(f) in (None, "")]
        problem = None
        if missing:
            problem = ("missing_field", f"missing field(s) {missing}")
        else:
            try:
                rating = float(record["overall"])
                stamp = int(float(record["unixReviewTime"]))
            except (TypeError, ValueError):
                problem = (
                    "bad_number",
                    f"overall={record.get('overall')!r} / unixReviewTime="
                    f"{record.get('unixReviewTime')!r} is not a number",
                )
        if problem:
            if not skip_bad:
                raise PrepError(
                    f"{path}, line {number}: review {problem[1]}; use --skip-bad-lines to skip and count such lines"
                )
            counts[problem[0]] += 1
            continue
        rows.append((str(record["reviewerID"]).strip(), str(record["asin"]).strip(), rating, stamp))
    counts["reviews"] = len(rows)
    counts["lines"] += counts["bad_json"]
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    return frame, counts


def read_metadata(path, skip_bad=False, progress=False):
    """The metadata dump as a DataFrame ``item title description image_url`` and counts."""
    counts = {"lines": 0, "bad_json": 0, "missing_asin": 0, "duplicate_asin": 0, "no_title": 0, "no_image": 0}
    rows, seen = [], set()
    for number, record in iter_json_lines(path, skip_bad, counts, progress):
        counts["lines"] += 1
        asin = str(record.get("asin") or "").strip()
        if not asin:
            if not skip_bad:
                raise PrepError(
                    f"{path}, line {number}: metadata without 'asin'; use --skip-bad-lines to skip and count such lines"
                )
            counts["missing_asin"] += 1
            continue
        if asin in seen:  # the 2018 dump repeats some products: keep the first
            counts["duplicate_asin"] += 1
            continue
        seen.add(asin)
        title = clean_text(record.get("title"))
        url = _first_url(record)
        counts["no_title"] += int(not title)
        counts["no_image"] += int(not url)
        rows.append((asin, title, clean_text(record.get("description")), url))
    counts["items"] = len(rows)
    counts["lines"] += counts["bad_json"]
    frame = pd.DataFrame(rows, columns=["item", "title", "description", "image_url"])
    return frame, counts


def write_tsv(frame, path):
    """A generic table: tab-separated, header row, no quoting (texts hold no tabs/newlines)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp" + (".gz" if path.endswith(".gz") else "")
    frame.to_csv(
        tmp, sep="\t", index=False, quoting=3, lineterminator="\n", compression="gzip" if path.endswith(".gz") else None
    )
    os.replace(tmp, path)


def convert_amazon(domains, out_dir, skip_bad_lines=False, compress=False, progress=True):
    """``domains``: ``[(name, reviews_path, meta_path), ...]``; writes the generic tables.

    Returns the summary (also written to ``<out_dir>/amazon_summary.json``).
    """
    names = [d[0] for d in domains]
    if len(set(names)) != len(names):
        raise PrepError(f"domain names must be unique, got {names}")
    ext = ".tsv.gz" if compress else ".tsv"
    summary = {"domains": {}}
    for name, reviews_path, meta_path in domains:
        if not _DOMAIN_RE.match(name):
            raise PrepError(f"domain name {name!r} must be letters, digits, _ or -")
        reviews, r_counts = read_reviews(reviews_path, skip_bad_lines, progress)
        items, m_counts = read_metadata(meta_path, skip_bad_lines, progress)
        inter_path = os.path.join(out_dir, f"{name}.inter{ext}")
        items_path = os.path.join(out_dir, f"{name}.items{ext}")
        write_tsv(reviews, inter_path)
        write_tsv(items, items_path)
        known = set(items["item"])
        summary["domains"][name] = {
            "reviews_file": reviews_path,
            "meta_file": meta_path,
            "interactions_file": inter_path,
            "items_file": items_path,
            "reviews": r_counts,
            "metadata": m_counts,
            "reviews_without_metadata": int((~reviews["item"].isin(known)).sum()),
        }
        if progress:
            print(
                f"{name}: {r_counts['reviews']:,} reviews ({r_counts['lines']:,} lines), "
                f"{m_counts['items']:,} items ({m_counts['lines']:,} lines) -> {inter_path}, "
                f"{items_path}",
                flush=True,
            )
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "amazon_summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


# --------------------------------------------------------------------------- images


def _image_name(item, url):
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", item)
    ext = os.path.splitext(urllib.parse.urlparse(url).path)[1].lower()
    if not re.match(r"^\.[a-z0-9]{1,5}$", ext):
        ext = ".jpg"
    return safe + ext


def download_images(
    items_path,
    image_dir,
    item_col="item",
    url_col="image_url",
    path_col="image_path",
    timeout=10.0,
    output=None,
    limit=None,
    progress=True,
):
    """Download each item's image; write the item table with a ``path_col`` column.

    Files already in ``image_dir`` are not fetched again (resumable); a failed download is
    counted and skipped (its path cell stays empty). Each file is written under a temporary
    name and renamed when complete. ``output`` defaults to overwriting ``items_path``.
    Returns the counts ``downloaded``, ``existing``, ``failed``, ``no_url`` and the first
    failures.
    """
    table = read_table(items_path, what="item table")
    require_columns(table, items_path, {"--item-col": item_col, "--url-col": url_col}, what="item table")
    output = output or items_path
    os.makedirs(image_dir, exist_ok=True)
    base = os.path.dirname(os.path.abspath(output))
    counts = {"downloaded": 0, "existing": 0, "failed": 0, "no_url": 0, "not_tried": 0}
    failures = []
    paths = []
    tried = 0
    rows = list(zip(table[item_col].tolist(), table[url_col].tolist()))
    for item, url in tqdm(rows, desc="images", unit="img", disable=not progress):
        url = url.strip()
        if not url:
            counts["no_url"] += 1
            paths.append("")
            continue
        target = os.path.join(image_dir, _image_name(item.strip(), url))
        rel = os.path.relpath(os.path.abspath(target), base).replace(os.sep, "/")
        if os.path.isfile(target) and os.path.getsize(target) > 0:
            counts["existing"] += 1
            paths.append(rel)
            continue
        if limit is not None and tried >= limit:
            counts["not_tried"] += 1
            paths.append("")
            continue
        tried += 1
        tmp = f"{target}.part"
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "dataset_prep/1"})
            with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
            if os.path.getsize(tmp) == 0:
                raise OSError("empty response")
            os.replace(tmp, target)
            counts["downloaded"] += 1
            paths.append(rel)
        except Exception as exc:  # noqa: BLE001 - network errors come in many types
            if os.path.exists(tmp):
                os.remove(tmp)
            counts["failed"] += 1
            if len(failures) < 20:
                failures.append(f"{item}: {url}: {type(exc).__name__}: {exc}")
            paths.append("")
    table[path_col] = paths
    write_tsv(table, output)
    return {**counts, "items_file": output, "image_dir": image_dir, "first_failures": failures}
