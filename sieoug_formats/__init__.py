"""The on-disk formats that data preparation writes and the models read, with their checks.

- :mod:`sieoug_formats.features`: item feature files ``<dataset>.<modality>.feat.npz``;
- :mod:`sieoug_formats.inter`: the check of a domain's RecBole atomic ``<dataset>.inter`` file.

Both ``dataset_prep`` (which writes the files) and ``sieoug_recbole`` (which reads them) use
this package, which needs numpy only: importing it imports neither torch nor the
recommendation framework, and repairs nothing (``import sieoug_recbole`` does both).
"""
