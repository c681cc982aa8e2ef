"""Suite-wide settings: no test may reach a network, figures render off-screen, and the parallel
test processes (pytest-xdist, ``-n auto`` in pyproject.toml) share the cores without oversubscribing them.

Set in the environment so that CLI subprocesses started by the tests inherit them.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MPLBACKEND"] = "Agg"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One test process per core already: a second intra-op thread per process would make the
    # processes' thread pools fight over the cores (several times slower on a 2-core machine).
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
