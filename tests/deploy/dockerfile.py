"""A small reader of the repository's Dockerfile and .dockerignore, for the offline checks of
tests/deploy. Nothing here skips for want of a Docker engine: the same Dockerfile's targets
are built for real with buildah (``mpp images build``) and run in the local cluster
(tests/cluster/test_images.py)."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int  # index of the FROM it belongs to (-1: before the first FROM)


def instructions(path: Path = REPO / "Dockerfile") -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    found: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        found.append(Instruction(keyword, arguments.strip(), stage))
    assert not pending, "the Dockerfile ends inside a continued line"
    return found


def arg_defaults(found: list[Instruction]) -> dict[str, str]:
    """Global and stage ARGs with a default value."""
    defaults = {}
    for ins in found:
        if ins.keyword == "ARG" and "=" in ins.arguments:
            name, _, value = ins.arguments.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def env_of_stage(found: list[Instruction], stage: int) -> dict[str, str]:
    """ENV key=value pairs of one stage and of the stages it is built FROM."""
    env: dict[str, str] = {}
    for index in reversed(stage_chain(found, stage)):
        for ins in found:
            if ins.keyword == "ENV" and ins.stage == index:
                for token in shlex.split(ins.arguments):
                    name, _, value = token.partition("=")
                    env[name] = value
    return env


@dataclass(frozen=True)
class Stage:
    index: int
    base: str  # what FROM names: an image (maybe ${ARG}) or an earlier stage's name
    name: str  # "" when the stage has no AS name


def stages(found: list[Instruction]) -> list[Stage]:
    """The FROM lines, in order: ``FROM [--platform=...] base [AS name]``."""
    result = []
    for ins in found:
        if ins.keyword != "FROM":
            continue
        words = [w for w in ins.arguments.split() if not w.startswith("--")]
        name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
        result.append(Stage(ins.stage, words[0], name))
    return result


def stage_chain(found: list[Instruction], stage: int) -> list[int]:
    """``stage`` and then each stage it is built FROM, up to the one on an image."""
    by_name = {s.name: s for s in stages(found) if s.name}
    chain = [stage]
    current = stages(found)[stage]
    while current.base in by_name:
        current = by_name[current.base]
        chain.append(current.index)
    return chain


def target(found: list[Instruction], name: str) -> int:
    """The index of the stage named ``name`` (a build target)."""
    matches = [s.index for s in stages(found) if s.name == name]
    assert len(matches) == 1, f"{len(matches)} stages named {name!r}"
    return matches[0]


def copy_sources(found: list[Instruction]) -> list[str]:
    """The build-context paths that COPY instructions read (not --from=<stage> copies)."""
    sources: list[str] = []
    for ins in found:
        if ins.keyword != "COPY":
            continue
        words = [w for w in shlex.split(ins.arguments)]
        if any(w.startswith("--from=") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources += words[:-1]
    return sources


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus **) as a regex over a cleaned path."""
    pattern = pattern.strip().strip("/")
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            if pattern.startswith("/", i):
                out[-1] = "(?:.*/)?"
                i += 1
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def ignore_rules(path: Path = REPO / ".dockerignore") -> list[tuple[bool, str, re.Pattern[str]]]:
    """(negated, pattern text, regex) for each line of a .dockerignore."""
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        text = line.lstrip("!").strip().strip("/")
        rules.append((negated, text, _pattern_regex(text)))
    return rules


def is_ignored(relative: str, rules: list[tuple[bool, str, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, _text, regex in rules:
        if any(regex.match(c) for c in candidates):
            ignored = not negated
    return ignored


def context_files(root: Path = REPO) -> list[str]:
    """The build context: every file that .dockerignore lets through. Like Docker, a folder
    that is ignored and that no "!" pattern reaches into is not walked (.git, .venv)."""
    rules = ignore_rules(root / ".dockerignore")
    files = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        base = Path(folder).relative_to(root).as_posix()
        base = "" if base == "." else base + "/"
        kept = []
        for name in dirs:
            relative = base + name
            reopened = any(neg and text.startswith(relative + "/") for neg, text, _ in rules)
            if not is_ignored(relative, rules) or reopened:
                kept.append(name)
        dirs[:] = kept
        for name in names:
            relative = base + name
            if not (Path(folder) / name).is_symlink() and not is_ignored(relative, rules):
                files.append(relative)
    return sorted(files)
