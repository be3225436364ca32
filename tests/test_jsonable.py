"""sieoug_recbole.jsonable: the one conversion of values to JSON's types."""

import json
import math
from collections import OrderedDict
from enum import Enum

import numpy as np
import torch

from sieoug_recbole.jsonable import jsonable


class Kind(Enum):
    GENERAL = 1


def test_numpy_and_torch_values_become_python_numbers_and_lists():
    value = {
        "f32": np.float32(0.25),
        "i64": np.int64(7),
        "flag": np.bool_(True),
        "array": np.arange(4).reshape(2, 2),
        "tensor": torch.tensor([0.5, 1.5]),
        "scalar_tensor": torch.tensor(3),
    }
    out = jsonable(value)
    assert out == {
        "f32": 0.25,
        "i64": 7,
        "flag": True,
        "array": [[0, 1], [2, 3]],
        "tensor": [0.5, 1.5],
        "scalar_tensor": 3,
    }
    assert type(out["f32"]) is float and type(out["i64"]) is int and type(out["flag"]) is bool
    assert type(out["array"][0][0]) is int
    json.dumps(out)  # no TypeError


def test_containers_keys_and_everything_else():
    value = OrderedDict([(2, (1, [np.float64(0.5)])), ("b", None), (0.5, "x")])
    out = jsonable(value)
    assert out == {"2": [1, [0.5]], "b": None, "0.5": "x"}
    assert list(out) == ["2", "b", "0.5"]  # order kept
    assert jsonable(Kind.GENERAL) == "Kind.GENERAL"  # not JSON: its str
    assert jsonable({1, 2}) in ("{1, 2}", "{2, 1}")
    nan = jsonable([float("nan"), np.float64("inf")])
    assert math.isnan(nan[0]) and nan[1] == math.inf
    assert jsonable("text") == "text" and jsonable(None) is None
