"""The check of a domain's .inter file (sieoug_formats.inter), alone and before the framework
reads the file (quick_start.make_config)."""

import os
import re
import shutil

import pytest

from sieoug_formats.inter import InterFileError, check_inter_file

GOOD = "user_id:token\titem_id:token\trating:float\nu1\ti1\t5\nu1\ti2\t4\n\nu2\ti1\t3\n"


def write(tmp_path, text, name="d.inter"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return str(path)


def check(path, **kwargs):
    return check_inter_file(path, "user_id", "item_id", **kwargs)


def test_a_good_file_passes_and_counts_its_rows(tmp_path):
    assert check(write(tmp_path, GOOD), load_columns=["user_id", "item_id", "rating"]) == 3
    assert check(write(tmp_path, GOOD.replace("\n", "\r\n"))) == 3  # Windows line ends read as the framework does


def test_a_header_column_without_type_suffix(tmp_path):
    path = write(tmp_path, "user_id\titem_id:token\nu1\ti1\n")
    with pytest.raises(
        InterFileError,
        match=re.escape(f"{path}: line 1: header column 'user_id' has no type suffix: expected 'user_id:token'"),
    ):
        check(path)


def test_an_unknown_type(tmp_path):
    with pytest.raises(
        InterFileError, match="line 1: header column 'item_id:str' has type 'str': expected one of token"
    ):
        check(write(tmp_path, "user_id:token\titem_id:str\nu1\ti1\n"))


def test_a_comma_separated_file(tmp_path):
    path = write(tmp_path, "user_id:token,item_id:token\nu1,i1\n")
    with pytest.raises(
        InterFileError,
        match=re.escape(
            f"{path}: line 1: the columns are separated by commas; RecBole reads tab-separated atomic files"
        ),
    ):
        check(path)


def test_an_empty_domain(tmp_path):
    path = write(tmp_path, "user_id:token\titem_id:token\n\n")
    with pytest.raises(
        InterFileError, match=re.escape(f"{path}: no interactions: the file has a header line but no rows")
    ):
        check(path)
    with pytest.raises(InterFileError, match="the file is empty: expected a header line"):
        check(write(tmp_path, "", "empty.inter"))


def test_a_row_with_an_extra_field(tmp_path):
    # the framework would read the first field as an index and shift every column
    path = write(tmp_path, "user_id:token\titem_id:token\nu1\ti1\nu2\ti2\t5\n")
    with pytest.raises(
        InterFileError, match=re.escape(f"{path}: line 3: 3 fields, but the header has 2 (an extra, unnamed column)")
    ):
        check(path)
    with pytest.raises(InterFileError, match="line 2: 1 fields, but the header has 2"):
        check(write(tmp_path, "user_id:token\titem_id:token\nu1\n", "short.inter"))


def test_an_unnamed_header_column(tmp_path):
    path = write(tmp_path, "user_id:token\titem_id:token\t\nu1\ti1\t\n")  # a trailing tab
    with pytest.raises(InterFileError, match=re.escape(f"{path}: line 1: header column 3 has no name ('')")):
        check(path)
    with pytest.raises(InterFileError, match="header column 'item_id' appears more than once"):
        check(write(tmp_path, "user_id:token\titem_id:token\titem_id:token\nu1\ti1\ti2\n", "twice.inter"))


def test_a_byte_that_is_not_utf8_names_its_line(tmp_path):
    path = write(tmp_path, b"user_id:token\titem_id:token\nu1\ti1\nu2\tcaf\xe9\n")
    with pytest.raises(InterFileError, match=re.escape(f"{path}: line 3: byte 0xe9 at column 7 is not UTF-8")):
        check(path)


@pytest.mark.parametrize(
    "fields, missing, key",
    [
        (("member_id", "item_id"), "user_id", "USER_ID_FIELD"),
        (("user_id", "asin"), "item_id", "ITEM_ID_FIELD"),
        (("user_id", "item_id"), "rating", "load_col"),
    ],
)
def test_a_configured_column_missing_from_the_header(tmp_path, fields, missing, key):
    path = write(tmp_path, "\t".join(f"{f}:token" for f in fields) + "\nu1\ti1\n")
    with pytest.raises(
        InterFileError,
        match=re.escape(
            f"{path}: line 1: no column '{missing}' (the domain's {key}); the header's columns are {', '.join(fields)}"
        ),
    ):
        check(path, load_columns=["user_id", "item_id", "rating"])


def copy_pair(synthetic_dir, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(synthetic_dir, folder)
    return folder


def test_make_config_checks_each_domain_before_the_framework_reads_it(fast_config, synthetic_dir, tmp_path):
    from conftest import SYNTHETIC_YAML

    from sieoug_recbole.quick_start import input_errors, make_config

    folder = copy_pair(synthetic_dir, tmp_path)
    inter = folder / "synthetic_target" / "synthetic_target.inter"
    lines = inter.read_text().splitlines()
    inter.write_text("\n".join(lines[:5] + [lines[5] + "\t1"] + lines[6:]) + "\n")
    config = dict(fast_config, data_path=str(folder) + os.sep)
    with pytest.raises(InterFileError, match=re.escape(f"{inter}: line 6: 3 fields, but the header has 2")):
        make_config("LightGCN", [SYNTHETIC_YAML], config)
    assert InterFileError in input_errors()  # the entry points print it as one line
    inter.write_text(lines[0] + "\n")  # a domain with no interactions
    with pytest.raises(InterFileError, match="no interactions"):
        make_config("LightGCN", [SYNTHETIC_YAML], config)
