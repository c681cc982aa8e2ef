"""Loading models and tokenizers: offline or unreachable Hub and damaged weights end in one line.

The CLI cases run ``psipo train`` in a subprocess against an endpoint that records each request
and hangs up: no wall-clock limits (they fail on a loaded machine), but the exact requests made,
so that a minute of retries shows as a list of requests. The Hub checks also run in-process
against local sockets that refuse, stay silent, or answer.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from huggingface_hub import constants

from psipo.errors import PsipoInputError
from psipo.lm.config import ModelConfig
from psipo.lm.hub import PROBE_TIMEOUT_SECONDS, resolve_hub_name
from psipo.lm.model import load_causal_lm, load_tokenizer

HUB_NAME = "some-org/some-model"


def closed_port_endpoint() -> str:
    """An endpoint whose port nothing listens on: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class HangingUpEndpoint:
    """A Hub that reads each request line, records it, and closes the connection unanswered.

    To huggingface_hub it is unreachable (it would retry for a minute); ``requests`` shows who
    asked what, so a test can require exactly psipo's one probe and nothing from the Hub client.
    """

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            with connection:
                line = connection.makefile("rb").readline().decode("latin-1").strip()
                self.requests.append(line)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def hanging_up_endpoint():
    endpoint = HangingUpEndpoint()
    yield endpoint
    endpoint.close()


PSIPO_PROBE = "HEAD / HTTP/1.1"


def run_train(tmp_path, *, model, env, train_data="train.jsonl"):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "psipo",
            "train",
            "--model",
            str(model),
            "--train_data",
            train_data,
            "--output_dir",
            "run",
            "--max_steps",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(completed, *fragments):
    """Exit 2, one error line holding every fragment, and nothing but psipo's own lines."""
    lines = completed.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("psipo: error:")]
    assert completed.returncode == 2, completed.stderr
    assert len(errors) == 1 and errors[0] == lines[-1], completed.stderr
    assert all(line.startswith("psipo") for line in lines), (
        completed.stderr
    )  # no retry log, no traceback
    for fragment in fragments:
        assert fragment in errors[0]
    return errors[0]


@pytest.fixture
def cli_dir(tmp_path, train_file):
    shutil.copy(train_file, tmp_path / "train.jsonl")
    return tmp_path


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "unreachable-endpoint"])
def test_a_hub_name_without_the_hub_fails_at_once_in_one_line(cli_dir, offline, hanging_up_endpoint):
    env = os.environ | {
        "HF_HUB_CACHE": str(cli_dir / "empty-cache"),
        "HF_ENDPOINT": hanging_up_endpoint.url,
    }
    if not offline:
        env = {k: v for k, v in env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    completed = run_train(cli_dir, model=HUB_NAME, env=env)
    line = assert_one_line_error(
        completed,
        HUB_NAME,
        "neither a local folder nor in the Hugging Face cache",
        "HF_HUB_OFFLINE",
    )
    assert ("is set" in line) == offline and ("cannot be reached" in line) == (not offline)
    # Offline: not one request. Unreachable: psipo's probe only, none of the Hub client's retries.
    assert hanging_up_endpoint.requests == ([] if offline else [PSIPO_PROBE])


def test_a_cached_hub_model_loads_without_the_hub(tmp_path, model_dir, hanging_up_endpoint):
    # A cache laid out as huggingface_hub lays it out, and a Hub that hangs up: the model comes
    # from the cache after psipo's one probe, without a minute of the Hub client's retries.
    snapshot = tmp_path / "cache" / "models--some-org--some-model" / "snapshots" / ("0" * 40)
    shutil.copytree(model_dir, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env |= {"HF_HUB_CACHE": str(tmp_path / "cache"), "HF_ENDPOINT": hanging_up_endpoint.url}
    code = (
        "from psipo.lm.config import ModelConfig\n"
        "from psipo.lm.model import load_causal_lm, load_tokenizer\n"
        f"config = ModelConfig(model={HUB_NAME!r})\n"
        "print(type(load_causal_lm(config.model, config)).__name__, type(load_tokenizer(config)).__name__)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split()[0] == "LlamaForCausalLM"
    assert "Retry" not in completed.stderr
    assert hanging_up_endpoint.requests == [PSIPO_PROBE]


def damage(weights, how: str) -> None:
    if how == "truncated":
        os.truncate(weights, weights.stat().st_size // 2)
    else:
        weights.write_bytes(b"not a safetensors file" if how == "garbage" else b"")


def test_truncated_safetensors_is_named_in_one_line(cli_dir, model_dir):
    broken = cli_dir / "model"
    shutil.copytree(model_dir, broken)
    damage(broken / "model.safetensors", "truncated")
    completed = run_train(cli_dir, model=broken, env=os.environ)
    assert_one_line_error(
        completed, f"model: {broken / 'model.safetensors'} is corrupt or truncated"
    )


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_damaged_weights_raise_the_input_error_in_python(tmp_path, model_dir, how):
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    damage(broken / "model.safetensors", how)
    config = ModelConfig(model=str(broken))
    assert load_tokenizer(config) is not None  # the tokenizer files are intact
    weights = re.escape(str(broken / "model.safetensors"))
    with pytest.raises(PsipoInputError, match=rf"^model: {weights} is corrupt or truncated: "):
        load_causal_lm(str(broken), config)


@pytest.fixture
def online(monkeypatch, tmp_path):
    """huggingface_hub online, with an empty cache; the test sets the endpoint."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    return lambda endpoint: monkeypatch.setattr(constants, "ENDPOINT", endpoint)


def test_a_silent_hub_is_given_up_after_the_probe_timeout(online):
    # A listening socket that never answers: the connection opens, the HEAD request hangs.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        online(f"http://127.0.0.1:{silent.getsockname()[1]}")
        start = time.monotonic()
        with pytest.raises(
            PsipoInputError, match=r"cannot be reached \(.*timed out.*\).*HF_HUB_OFFLINE=1"
        ):
            resolve_hub_name(HUB_NAME, key="model", what="a causal LM")
    # The probe gives up after PROBE_TIMEOUT_SECONDS; the bound is loose for a loaded machine,
    # and still far below a hang (urllib has no timeout of its own).
    assert time.monotonic() - start < PROBE_TIMEOUT_SECONDS + 20


def test_an_answering_hub_lets_the_loader_try(online):
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # any HTTP answer means the Hub is there
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        online(f"http://127.0.0.1:{server.server_port}")
        assert resolve_hub_name(HUB_NAME, key="model", what="a causal LM") == HUB_NAME
    finally:
        server.shutdown()
        server.server_close()


def test_local_folders_and_paths_are_left_to_the_loader(model_dir, online, tmp_path):
    online(closed_port_endpoint())
    for name in (str(model_dir), str(tmp_path / "missing"), "./missing", "~/missing/model"):
        assert resolve_hub_name(name, key="model", what="a causal LM") == name
    with pytest.raises(PsipoInputError, match="cannot be reached"):
        resolve_hub_name(HUB_NAME, key="model", what="a causal LM")


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "unreachable-endpoint"])
def test_a_hub_dataset_name_without_the_hub_fails_at_once_in_one_line(
    cli_dir, model_dir, offline, hanging_up_endpoint
):
    env = os.environ | {"HF_HUB_CACHE": str(cli_dir / "empty-cache"), "HF_ENDPOINT": hanging_up_endpoint.url}
    env |= {"HF_DATASETS_CACHE": str(cli_dir / "empty-datasets-cache")}
    if not offline:
        env = {k: v for k, v in env.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    completed = run_train(cli_dir, model=model_dir, env=env, train_data="some-org/some-pairs")
    assert_one_line_error(completed, "train_data: cannot load 'some-org/some-pairs' as a dataset", "HF_HUB_OFFLINE")
    assert hanging_up_endpoint.requests == ([] if offline else [PSIPO_PROBE])


def test_a_hub_dataset_name_offline_names_the_key(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(
        PsipoInputError,
        match=r"^train_data: cannot load 'org/data' as a dataset: .*HF_HUB_OFFLINE is set",
    ):
        resolve_hub_name("org/data", key="train_data", what="a dataset", repo_type="dataset")


def test_a_missing_quickstart_fixture_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh clone: configs/quickstart.yaml names these paths
    config = ModelConfig(model=".psipo-quickstart/model")
    with pytest.raises(PsipoInputError) as missing:
        load_causal_lm(config.model, config)
    assert str(missing.value) == (
        "model: cannot load '.psipo-quickstart/model': no such local folder; create the quickstart "
        "fixtures first: python -m psipo.lm.fixtures quickstart .psipo-quickstart"
    )
    other = ModelConfig(model="./elsewhere/model")
    with pytest.raises(PsipoInputError, match=r"no such local folder$"):
        load_causal_lm(other.model, other)


# --------------------------------------------------------------------------- psipo.lm.hub, in-process
# Each test below fails on a mutant of psipo/lm/hub.py that the tests above let through.


def test_local_paths_come_back_expanded_and_a_file_names_its_folder(monkeypatch, tmp_path, online):
    online(closed_port_endpoint())
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "config.json").write_text("{}")
    assert resolve_hub_name("~/models/m", key="model", what="a causal LM") == str(tmp_path / "models" / "m")
    with pytest.raises(PsipoInputError, match=r"^model: ~/models/m/config.json is a file; give the folder that holds it and its companions \(~/models/m\)$"):
        resolve_hub_name("~/models/m/config.json", key="model", what="a causal LM")


def test_offline_by_transformers_variable_names_that_variable(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(PsipoInputError, match=r"TRANSFORMERS_OFFLINE is set, so the Hub is not tried"):
        resolve_hub_name(HUB_NAME, key="model", what="a causal LM")


def test_a_dataset_prepared_in_datasets_own_cache_is_left_to_datasets_offline(monkeypatch, tmp_path):
    import datasets

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    (tmp_path / "datasets" / "org___data").mkdir(parents=True)
    assert resolve_hub_name("org/data", key="train_data", what="a dataset", repo_type="dataset") == "org/data"


def test_the_probe_is_given_up_even_when_it_hangs_outside_the_socket_and_its_answer_is_reused(monkeypatch):
    # Name resolution is not covered by the socket's timeout: a hanging probe is left behind.
    import uuid

    from psipo.lm import hub

    calls = []

    def hanging(endpoint):
        calls.append(endpoint)
        time.sleep(30)

    monkeypatch.setattr(hub, "PROBE_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(hub, "_probe", hanging)
    endpoint = f"http://{uuid.uuid4().hex}.invalid"
    start = time.monotonic()
    assert hub._unreachable_reason(endpoint) == "no answer within 0.2 s"
    assert time.monotonic() - start < 10
    assert hub._unreachable_reason(endpoint) == "no answer within 0.2 s" and calls == [endpoint]  # asked once


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ssl.SSLError("certificate verify failed"), None),  # something answered
        (urllib.error.URLError(ssl.SSLError("certificate verify failed")), None),
        (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), "[Errno 111] Connection refused"),
        (urllib.error.HTTPError("http://x", 503, "Service Unavailable", None, None), None),
    ],
)
def test_a_tls_failure_or_an_http_error_is_an_answer(monkeypatch, error, reason):
    from psipo.lm import hub

    def urlopen(request, timeout):
        raise error

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    assert hub._probe("https://hub.example") == reason


@pytest.mark.parametrize("name", ["", " "])
def test_an_empty_model_name_is_one_line_not_the_hub_repo_id_rules(name):
    # `--baseline ""` or `--reference_model ""` quoted huggingface_hub's rules for repo ids.
    with pytest.raises(PsipoInputError, match=r"^baseline: empty; give a local folder or a Hugging Face Hub name of a causal LM$"):
        resolve_hub_name(name, key="baseline", what="a causal LM")
