"""Names that are not local folders: fail in seconds, in one line, when the Hub cannot serve them.

Left to itself, huggingface_hub retries an unreachable Hub for about a minute and logs every
retry before transformers or datasets give up, even for a name it has cached. Before such a
load psipo asks whether the Hub answers one request within a few seconds; when it does not, the
name is loaded from its snapshot in the local Hugging Face cache, as a local folder, or fails
at once in one line.
"""

from __future__ import annotations

import math
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from psipo.errors import PsipoInputError

PROBE_TIMEOUT_SECONDS = 3.0


def resolve_hub_name(
    name: str, *, key: str, what: str, repo_type: str = "model", revision: str | None = None
) -> str:
    """What to load for ``name``: ``name`` itself, or its snapshot folder in the Hugging Face cache.

    A local folder comes back with ``~`` expanded (a YAML config has no shell to do it). ``name``
    comes back unchanged when it is no Hub name at all (the loader
    reports that), or the Hub answers. When the Hub is offline (``HF_HUB_OFFLINE``) or does
    not answer within a few seconds, the cached snapshot of ``revision`` comes back instead: a
    local folder, which loads without the minute of retries. Without a snapshot either, a
    :class:`PsipoInputError` says, under ``key``, that ``name`` cannot be loaded as ``what``
    ("a causal LM", "a dataset"), why, and what ``HF_HUB_OFFLINE`` does. ``repo_type`` is
    "model" or "dataset".
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import validate_repo_id

    if not name.strip():  # else the Hub's repo-id rules are quoted at the user
        raise PsipoInputError(f"{key}: empty; give a local folder or a Hugging Face Hub name of {what}")
    if os.path.isdir(os.path.expanduser(name)):
        return os.path.expanduser(name)
    if os.path.isfile(os.path.expanduser(name)):  # model/tokenizer.json, model/model.safetensors
        raise PsipoInputError(
            f"{key}: {name} is a file; give the folder that holds it and its companions ({Path(name).parent})"
        )
    try:
        validate_repo_id(name)
    except ValueError:
        return name
    offline = constants.HF_HUB_OFFLINE
    unreachable = None if offline else _unreachable_reason(constants.ENDPOINT)
    if not offline and unreachable is None:
        return name
    snapshot = _cached_snapshot(name, repo_type, revision)
    if snapshot is not None:
        return snapshot
    if repo_type == "dataset" and _in_datasets_cache(name):
        return name
    not_here = f"{key}: cannot load {name!r} as {what}: it is neither a local folder nor in the Hugging Face cache"
    if offline:
        raise PsipoInputError(
            f"{not_here}, and {offline_variable()} is set, so the Hub is not tried (unset it to download)"
        )
    raise PsipoInputError(
        f"{not_here}, and the Hub at {constants.ENDPOINT} cannot be reached ({unreachable}); check "
        "the network and the name, or set HF_HUB_OFFLINE=1 to use only local folders and the cache "
        "without trying the network"
    )


def offline_variable() -> str:
    """The environment variable that put huggingface_hub offline (it honours both)."""
    return "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"


def _cached_snapshot(name: str, repo_type: str, revision: str | None) -> str | None:
    """The cache's snapshot folder of ``name`` at ``revision``, found without the network.

    It may lack files (an interrupted download): the loader then names what is missing."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            name, repo_type=repo_type, revision=revision, local_files_only=True
        )
    except OSError:  # LocalEntryNotFoundError: nothing cached for that revision
        return None


def _in_datasets_cache(name: str) -> bool:
    """Whether datasets' own cache holds data prepared from ``name``: datasets loads it offline."""
    import datasets

    return (Path(datasets.config.HF_DATASETS_CACHE) / name.replace("/", "___")).is_dir()


PROBE_REUSE_SECONDS = 60.0
_recent_probes: dict[str, tuple[float, str | None]] = {}


def _unreachable_reason(endpoint: str) -> str | None:
    """None when ``endpoint`` answers one HEAD request; otherwise why not.

    Any HTTP answer counts, and so does a TLS failure: something answered, and the Hub client
    may trust certificates that urllib does not. urllib uses the same proxy variables as the
    Hub client. An answer is reused for a minute, so that the tokenizer, model, reference and
    data of one run ask once, while a long-lived process notices the network coming back.
    """
    now = time.monotonic()
    asked_at, reason = _recent_probes.get(endpoint, (-math.inf, None))
    if now - asked_at < PROBE_REUSE_SECONDS:
        return reason
    outcome: list[str | None] = []
    # The socket timeout does not cover name resolution, which can hang on a broken resolver.
    thread = threading.Thread(target=lambda: outcome.append(_probe(endpoint)), daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_SECONDS + 1)
    reason = outcome[0] if outcome else f"no answer within {PROBE_TIMEOUT_SECONDS:g} s"
    _recent_probes[endpoint] = (now, reason)
    return reason


def _probe(endpoint: str) -> str | None:
    try:
        request = urllib.request.Request(endpoint, method="HEAD")
        urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_SECONDS).close()
    except urllib.error.HTTPError:
        pass
    except urllib.error.URLError as exc:
        if not isinstance(exc.reason, ssl.SSLError):
            return str(exc.reason)
    except ssl.SSLError:
        pass
    except OSError as exc:
        return str(exc) or type(exc).__name__
    return None
