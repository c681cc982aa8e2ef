"""Suite-wide settings: no test may reach a network, figures render off-screen, and the parallel
test processes (pytest-xdist, ``-n auto`` in pyproject.toml) share the cores without oversubscribing them.

Set in the environment so that CLI subprocesses started by the tests inherit them.
"""

import os
import signal

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MPLBACKEND"] = "Agg"

# The Ctrl-C tests send SIGINT to this process and to `psipo` subprocesses. Started as a
# background job of a shell without job control, pytest inherits SIGINT ignored, passes that to
# its children, and Python then installs no KeyboardInterrupt handler: give it back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One test process per core already: a second intra-op thread per process would make the
    # processes' thread pools fight over the cores (several times slower on a 2-core machine).
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def copy_with_swapped_tokens():
    """``copy(model_dir, dest)``: a copy of a fixture model whose tokenizer gives two words each
    other's ids — the same vocabulary size, another tokenizer (as Llama 2's and Mistral's are)."""
    import json
    import shutil

    def copy(model_dir, dest):
        shutil.copytree(model_dir, dest)
        path = dest / "tokenizer.json"
        tokenizer = json.loads(path.read_text())
        vocab = tokenizer["model"]["vocab"]
        vocab["w0"], vocab["w1"] = vocab["w1"], vocab["w0"]
        path.write_text(json.dumps(tokenizer))
        return dest

    return copy
