"""Suite-wide settings: no test may reach a network, and figures render off-screen.

Set in the environment so that CLI subprocesses started by the tests inherit them.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MPLBACKEND"] = "Agg"
