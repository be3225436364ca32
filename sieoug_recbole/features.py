"""The item feature file format, :mod:`sieoug_formats.features` (re-exported here: the
format is shared with ``dataset_prep``, which must not import this package)."""

from sieoug_formats.features import (  # noqa: F401
    FEATURE_SUFFIX,
    FeatureFileError,
    align_item_features,
    feature_path,
    load_modalities,
    read_item_features,
    write_item_features,
)
