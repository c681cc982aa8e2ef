"""Numbers that are not finite go to JSON as "inf", "-inf", "nan" and come back as floats."""

import json
import math

from psipo._json import from_json_data, to_json_data


def test_non_finite_numbers_round_trip_through_strict_json():
    value = {"a": [1.5, math.inf, (-math.inf, 2)], "b": {"c": math.nan}, "name": "bt:inf", "none": None}
    text = json.dumps(to_json_data(value), allow_nan=False)
    assert json.loads(text) == {"a": [1.5, "inf", ["-inf", 2]], "b": {"c": "nan"}, "name": "bt:inf", "none": None}
    back = from_json_data(json.loads(text))
    assert back["a"] == [1.5, math.inf, [-math.inf, 2]] and math.isnan(back["b"]["c"])
    assert back["name"] == "bt:inf" and back["none"] is None  # only the exact strings are numbers
