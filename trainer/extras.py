"""Optional packages (pyproject extras): one check that names the install command. Standard library only."""
from __future__ import annotations

import importlib.util

from trainer.errors import BadInputError


class MissingExtraError(BadInputError):
    """A feature's packages are not installed: exit 2 with the command that installs them."""


def require_modules(modules: tuple[str, ...], extra: str | None, what: str) -> None:
    """Raise ``MissingExtraError`` naming the install command when one of ``modules`` cannot be imported."""
    missing = [name for name in modules if _absent(name)]
    if missing:
        packages = " ".join(name.replace("_", "-") for name in missing)
        if extra is None:  # part of the default install (TensorFlow, on an environment made without it)
            raise MissingExtraError(
                f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
                f"pip install {packages} (trainer's default install includes it)."
            )
        raise MissingExtraError(
            f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed; "
            f"install the [{extra}] extra: pip install -e '.[{extra}]' in the trainer checkout (or pip install {packages})."
        )


def _absent(name: str) -> bool:
    """``name`` cannot be imported (not installed, or hidden: ``find_spec`` raises for a module set to None)."""
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True
