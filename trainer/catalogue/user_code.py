"""``module:attr`` references to user code: import them, record them, load them back (no TensorFlow here).

When training, the folder holding the config and the working directory are importable, in that
order. Every import that made it into a model is recorded in ``manifest.json`` (``custom_objects``)
with the folder it came from. ``trainer eval`` / ``trainer predict`` import that code again only
from folders the user names (``--code DIR``; with ``--config``, its folder and the working
directory): a run directory is data, and opening one never runs code it names.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Iterable

from trainer.errors import ConfigError, RunDirError

REF_HELP = "a reference looks like 'my_module:Name' (a module importable from the config's folder or the working directory)"


def is_ref(name: str) -> bool:
    """Whether a catalogue name is a ``module:attr`` reference to user code."""
    return isinstance(name, str) and ":" in name


def split_ref(ref: str, key: str) -> tuple[str, str]:
    """``pkg.mod:Attr`` -> (``pkg.mod``, ``Attr``); a malformed reference is a ConfigError naming ``key``."""
    module, _, attr = ref.partition(":")
    if not module or not attr or ":" in attr or not all(p.isidentifier() for p in module.split(".")) or not all(
        p.isidentifier() for p in attr.split(".")
    ):
        raise ConfigError(f"{key}: {ref!r} is not a valid reference; {REF_HELP}.")
    return module, attr


def search_dirs(config_dir: str | Path | None) -> list[Path]:
    """The folders user modules are imported from: the config's folder, then the working directory."""
    dirs = [Path(config_dir).resolve()] if config_dir else []
    cwd = Path(os.getcwd()).resolve()
    if cwd not in dirs:
        dirs.append(cwd)
    return dirs


def _import_module(module_name: str, dirs: Iterable[Path], key: str):
    """Import ``module_name``, preferring ``dirs``; a stale copy from another folder is re-imported."""
    dirs = [Path(d) for d in dirs]
    top = module_name.split(".")[0]
    spec = importlib.machinery.PathFinder.find_spec(top, [str(d) for d in dirs])
    if spec is not None and spec.origin:
        loaded = sys.modules.get(top)
        if loaded is not None and getattr(loaded, "__file__", None) != spec.origin:
            for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
                del sys.modules[name]
    for folder in reversed(dirs):
        text = str(folder)
        if text in sys.path:
            sys.path.remove(text)
        sys.path.insert(0, text)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            looked = ", ".join(str(d) for d in dirs)
            raise ConfigError(f"{key}: module {module_name!r} not found (looked in {looked} and the installed packages); {REF_HELP}.") from None
        raise ConfigError(f"{key}: importing module {module_name!r} failed: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - user code failed while importing: say so, with its message
        raise ConfigError(f"{key}: importing module {module_name!r} failed: {type(exc).__name__}: {exc}") from None


def import_ref(ref: str, config_dir: str | Path | None = None, *, key: str = "reference", dirs: Iterable[Path] | None = None) -> tuple[Any, Path]:
    """The object ``ref`` names and the folder its top-level module was imported from."""
    module_name, attr = split_ref(ref, key)
    module = _import_module(module_name, dirs if dirs is not None else search_dirs(config_dir), key)
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            public = sorted(n for n in dir(module) if not n.startswith("_"))
            raise ConfigError(
                f"{key}: module {module_name!r} ({getattr(module, '__file__', '?')}) has no attribute {part!r}; "
                f"it defines: {', '.join(public) or 'nothing public'}."
            )
        value = getattr(value, part)
    return value, module_root(module, module_name)


def module_root(module: Any, module_name: str) -> Path:
    """The folder that must be on ``sys.path`` to import ``module_name`` again."""
    file = getattr(module, "__file__", None)
    if not file:
        return Path(os.getcwd()).resolve()
    path = Path(file).resolve()
    depth = module_name.count(".") + (1 if path.name == "__init__.py" else 0)
    return path.parents[depth]


def positional_arity(func: Any) -> int | None:
    """How many positional parameters a plain function requires (None when it cannot be inspected)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in signature.parameters.values() if p.kind in kinds and p.default is inspect.Parameter.empty)


def record(ref: str, path: Path, factory_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``manifest.json`` ``custom_objects`` entry; a factory's parameters are kept to call it again."""
    entry: dict[str, Any] = {"ref": ref, "path": str(path)}
    if factory_params is not None:
        entry["factory_params"] = dict(factory_params)
    return entry


def is_factory(value: Any, params: dict[str, Any]) -> bool:
    """A plain function that is not itself ``(y_true, y_pred)``: called with the parameters to make the object."""
    return inspect.isfunction(value) and (bool(params) or positional_arity(value) != 2)


def object_names(attr: str, value: Any) -> dict[str, Any]:
    """The names Keras may look ``value`` up by when deserializing (its attribute name and its own name)."""
    target = value if inspect.isclass(value) or inspect.isfunction(value) else type(value)
    names = {attr.split(".")[-1], getattr(target, "__name__", "")}
    return {name: target for name in names if name}


def code_dirs_for(code: Iterable[str | Path] = (), config_dir: str | Path | None = None) -> list[Path]:
    """The folders a finished run's custom code may be imported from: those the user named (``--code``),
    plus, when the user passed ``--config``, that config's folder and the working directory."""
    from trainer.paths import user_path

    dirs = []
    for folder in code:
        path = user_path(folder, "--code")
        if not path.is_dir():
            raise ConfigError(f"--code {folder}: not a folder; pass the folder that holds your module (e.g. the one with my_losses.py).")
        dirs.append(path.resolve())
    if config_dir is not None:
        dirs += [d for d in search_dirs(config_dir) if d not in dirs]
    return dirs


def load_custom_objects(manifest: dict[str, Any], code_dirs: Iterable[str | Path] = ()) -> dict[str, Any]:
    """The ``custom_objects`` dict for ``keras.models.load_model`` of a run directory's model.

    ``manifest`` is the run's parsed ``manifest.json``. A run directory is data, never code: each
    recorded ``module:attr`` is imported only from ``code_dirs``, the folders the user named
    (``--code DIR``, or the config's folder and the working directory with ``--config``); never
    from the run directory, from the folder the manifest records, or from installed packages.
    Besides the user's objects the dict holds trainer's own metrics, losses and schedules, so it is always safe to pass.
    Raises ``RunDirError`` (exit 2) naming the module and how to allow it when it is not found there.
    """
    from trainer.catalogue.keras_objects import trainer_objects  # Keras is needed to load a model anyway

    dirs = [Path(d).resolve() for d in code_dirs]
    objects: dict[str, Any] = trainer_objects()
    for index, entry in enumerate(manifest.get("custom_objects") or []):
        ref = entry.get("ref", "") if isinstance(entry, dict) else ""
        key = f"manifest.json custom_objects.{index} ({ref})"
        try:
            module_name, attr = split_ref(ref, key)
        except ConfigError as exc:
            raise RunDirError(f"the run's manifest is malformed: {exc.message}") from None
        top = module_name.split(".")[0]
        spec = importlib.machinery.PathFinder.find_spec(top, [str(d) for d in dirs]) if dirs else None
        if spec is None:
            recorded = f" (it was trained with {top} from {entry['path']})" if isinstance(entry.get("path"), str) else ""
            looked = f"; looked in {', '.join(str(d) for d in dirs)}" if dirs else ""
            raise RunDirError(
                f"the run's model needs custom code: module {module_name!r} ({ref}){recorded}{looked}. trainer never imports "
                "code because a run directory names it; to allow it, pass --code DIR, the folder holding "
                f"{top}.py (or {top}/), or code_dirs=[DIR] in the Python API."
            )
        try:
            value, _ = import_ref(ref, key=key, dirs=dirs)
        except ConfigError as exc:
            raise RunDirError(f"cannot load the model's custom code: {exc.message}") from None
        factory_params = entry.get("factory_params")
        if factory_params is not None:
            if not isinstance(factory_params, dict):
                raise RunDirError(f"the run's manifest is malformed: {key}: factory_params is {factory_params!r}, expected a mapping.")
            value = _call(value, factory_params, key, ref)
        objects.update(object_names(attr, value))
    return objects


def instantiate(
    ref: str, params: dict[str, Any], config_dir: str | Path | None, *, key: str, base: type, what: str, allow_function: bool = True
) -> tuple[Any, dict[str, Any]]:
    """Import ``ref`` and make the object to use: a ``base`` subclass called with ``params``, a plain
    function ``(y_true, y_pred)``, or a factory called with ``params``. Returns it and its manifest entry."""
    value, path = import_ref(ref, config_dir, key=key)
    kinds = f"a {base.__module__.split('.')[0]}.{base.__name__} subclass" + (", a function (y_true, y_pred) or a factory returning one" if allow_function else "")
    if inspect.isclass(value):
        if not issubclass(value, base):
            raise ConfigError(f"{key}: {ref} is the class {value.__name__}, not a {what}; expected {kinds}.")
        return _call(value, params, key, ref), record(ref, path)
    if allow_function and is_factory(value, params):
        made = _call(value, params, key, ref)
        if not (isinstance(made, base) or inspect.isfunction(made)):
            raise ConfigError(f"{key}: the factory {ref} returned {type(made).__name__}, not a {what}; expected {kinds}.")
        return made, record(ref, path, params)
    if allow_function and inspect.isfunction(value):
        return value, record(ref, path)
    if isinstance(value, base):
        if params:
            raise ConfigError(f"{key}: {ref} is a ready-made {what} object, so it takes no parameters; got {', '.join(params)}.")
        return value, record(ref, path)
    raise ConfigError(f"{key}: {ref} is a {type(value).__name__}, not a {what}; expected {kinds}.")


def _call(func: Any, params: dict[str, Any], key: str, ref: str) -> Any:
    try:
        return func(**params)
    except TypeError as exc:
        raise ConfigError(f"{key}: {ref} refused its parameters {params}: {exc}") from None
