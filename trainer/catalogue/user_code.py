"""``module:attr`` references to user code: import them, record them, load them back (no TensorFlow here).

When training, the folder holding the config and the working directory are importable, in that
order. Every import that made it into a model is recorded in ``manifest.json`` (``custom_objects``)
with the folder it came from. ``trainer eval`` / ``trainer predict`` import that code again only
from folders the user names (``--code DIR``; with ``--config``, its folder and the working
directory): a run directory is data, and opening one never runs code it names.

A reference resolves only to a class or function *defined in* the module it names (its
``__module__`` is that module, its ``__qualname__`` the attribute): one attribute name, never a
dotted path, never a name the module imported (``os``, ``keras``, ``subprocess.run``), never a
module, lambda or other object. Loading a run back, the module must come from a folder the user
named, and only Keras objects (``keras_objects.KERAS_OBJECT_BASES``) and plain functions reach
Keras; only a function is ever called with ``factory_params``.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Iterable

from trainer.errors import ConfigError

REF_HELP = (
    "a reference looks like 'my_module:Name' (a module importable from the config's folder or the working directory, "
    "and a class or function defined in it)"
)


def is_ref(name: str) -> bool:
    """Whether a catalogue name is a ``module:attr`` reference to user code."""
    return isinstance(name, str) and ":" in name


def split_ref(ref: str, key: str) -> tuple[str, str]:
    """``pkg.mod:Attr`` -> (``pkg.mod``, ``Attr``); a malformed reference is a ConfigError naming ``key``."""
    module, _, attr = ref.partition(":")
    if not module or not attr or not all(p.isidentifier() for p in module.split(".")) or not attr.isidentifier():
        dotted = " (one name after ':', not a path through what the module imports)" if "." in attr else ""
        raise ConfigError(f"{key}: {ref!r} is not a valid reference{dotted}; {REF_HELP}.")
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


def import_ref(
    ref: str, config_dir: str | Path | None = None, *, key: str = "reference", dirs: Iterable[Path] | None = None,
    what: str = "class or function",
) -> tuple[Any, Path]:
    """The class or function ``ref`` names and the folder its top-level module was imported from.

    Only an object defined in that module is returned (``defined_in``); anything else is a
    ConfigError naming ``key`` and saying what was found (``what``: the kind the caller wants).
    """
    module_name, attr = split_ref(ref, key)
    module = _import_module(module_name, dirs if dirs is not None else search_dirs(config_dir), key)
    if getattr(module, "__name__", None) != module_name:  # a package put another module under this name in sys.modules
        raise ConfigError(f"{key}: importing {module_name!r} gave the module {getattr(module, '__name__', '?')!r}; {REF_HELP}.")
    where = f"module {module_name!r} ({getattr(module, '__file__', '?')})"
    if attr not in vars(module):
        public = sorted(n for n, v in vars(module).items() if not n.startswith("_") and defined_in(v, module_name, n))
        raise ConfigError(f"{key}: {where} has no attribute {attr!r}; it defines: {', '.join(public) or 'nothing public'}.")
    value = vars(module)[attr]
    if not defined_in(value, module_name, attr):
        raise ConfigError(f"{key}: {ref} is {_described(value)}, not a {what} defined in {where}; {REF_HELP}.")
    return value, module_root(module, module_name)


def defined_in(value: Any, module_name: str, attr: str) -> bool:
    """Whether ``value`` is a class or function written in ``module_name`` under the name ``attr``.

    Not a module, builtin, lambda, instance, or anything the module imported or aliased: what a
    reference names is then the code of that file, never a path through what it imports.
    """
    if not (inspect.isclass(value) or inspect.isfunction(value)):
        return False
    return getattr(value, "__module__", None) == module_name and getattr(value, "__qualname__", None) == attr


def _described(value: Any) -> str:
    """What a refused object is, in words (``the module os``, ``the function system from posix``)."""
    if inspect.ismodule(value):
        return f"the module {value.__name__}"
    if inspect.isclass(value) or inspect.isfunction(value) or inspect.isbuiltin(value):
        kind = "class" if inspect.isclass(value) else "lambda" if getattr(value, "__name__", "") == "<lambda>" else "function"
        origin = getattr(value, "__module__", None) or "builtins"
        return f"the {kind} {getattr(value, '__qualname__', '?')} from {origin}"
    return f"a {type(value).__name__} object"


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
    names = {attr, getattr(target, "__name__", "")}
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


def instantiate(
    ref: str, params: dict[str, Any], config_dir: str | Path | None, *, key: str, base: type, what: str, allow_function: bool = True
) -> tuple[Any, dict[str, Any]]:
    """Import ``ref`` and make the object to use: a ``base`` subclass called with ``params``, a plain
    function ``(y_true, y_pred)``, or a factory called with ``params``. Returns it and its manifest entry."""
    kinds = f"a {base.__module__.split('.')[0]}.{base.__name__} subclass" + (", a function (y_true, y_pred) or a factory returning one" if allow_function else "")
    value, path = import_ref(ref, config_dir, key=key, what=what)
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
    raise ConfigError(f"{key}: {ref} is the function {value.__name__}, not a {what}; expected {kinds}.")


def _call(func: Any, params: dict[str, Any], key: str, ref: str, error: type = ConfigError) -> Any:
    try:
        return func(**params)
    except TypeError as exc:
        raise error(f"{key}: {ref} refused its parameters {params}: {exc}") from None
