"""What the CLI falls back on where the dev tooling is not installed (the images).

The images' wheel leaves out the local stack (``mpp.stack``: ``mpp stack|services|images``),
the sample conversations (``mpp.samples``) and ``mpp demo``'s pipeline (``mpp.pipeline``); see
pyproject.toml. ``mpp.cli`` imports these stand-ins instead, so that the operator commands of
an image (``mpp db migrate``, ``mpp topics ensure`` ...) work, and a dev command says why not.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NoReturn

DEV_MODULES = ("mpp.stack", "mpp.samples", "mpp.pipeline", "chitchat_dataset", "milvus_lite")
SERVER_NAMES: tuple[str, ...] = ()


def dev_only_message(module: str) -> str:
    return (
        f"{module}: dev tooling; not installed in images (run this command from a development "
        "checkout: scripts/bootstrap.sh)"
    )


def is_dev_module(exc: ModuleNotFoundError) -> bool:
    """Whether a failed import is of the dev tooling that images leave out."""
    name = exc.name or ""
    return any(name == m or name.startswith(m + ".") for m in DEV_MODULES)


def _missing() -> NoReturn:
    raise ModuleNotFoundError(dev_only_message("mpp.stack"), name="mpp.stack")


class StackError(RuntimeError):
    """Stand-in of mpp.stack.StackError (never raised here)."""


class State(StrEnum):
    DOWN = "down"


class Stack:
    """Stand-in of mpp.stack.Stack: every use says that the local stack is not installed."""

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        _missing()

    @classmethod
    def services(cls, *_args: object, **_kwargs: object) -> Stack:
        _missing()
