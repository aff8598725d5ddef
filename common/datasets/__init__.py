"""Dataset preparation: commands that turn a dataset as published into the MSD-style ``datalist.json`` the bundles
read (``make_datalist`` for an image folder and a label folder, ``fundus``, ``lesions``, ``lits``, ``synapse`` for the
layouts they know, each a ``python -m`` command and a console script), and a synthetic sample dataset for demos and
tests. What the bundles' configs use at run time (datalist loading, transforms) is in ``common.data``."""

from .synthetic import make_synthetic_case, make_synthetic_dataset

__all__ = ["make_synthetic_case", "make_synthetic_dataset"]
