"""Reading a config: YAML with line numbers, ``--set`` overrides, validation with every problem located.

Never imports TensorFlow: ``trainer validate`` and ``--help`` stay fast.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from trainer.catalogue.registry import closest, unknown_choice_message
from trainer.config.models import DEFAULT_MODEL_TYPE, MODEL_TYPES, model_class_for
from trainer.config.schema import Config, KeyPath, NamedSpec
from trainer.errors import ConfigError
from trainer.paths import check_path_text

# --------------------------------------------------------------------------- YAML with line numbers


class _Source:
    """Where each key of a loaded document came from, for error messages."""

    def __init__(self, file: str | None, marks: dict[KeyPath, int] | None = None):
        self.file = file
        self.marks = marks or {}
        self.overrides: dict[KeyPath, str] = {}

    def where(self, path: KeyPath) -> str:
        prefixes = [path[:cut] for cut in range(len(path), -1, -1)]
        for prefix in prefixes:  # an override replaces the file's whole subtree, so it wins over deeper file lines
            if prefix in self.overrides:
                return f"--set {self.overrides[prefix]}"
        inner = [text for key, text in self.overrides.items() if key[: len(path)] == path]  # --set inside this section
        line = next((f"{self.file}:{self.marks[prefix]}" for prefix in prefixes if prefix in self.marks and self.file), None)
        if inner and (line is None or path not in self.marks):  # the file never wrote this key: the --set made it
            return ", ".join(f"--set {text}" for text in inner)
        if inner:
            return f"{line} (with " + ", ".join(f"--set {text}" for text in inner) + ")"
        return line or self.file or "config"


def _collect_marks(node: yaml.Node, path: KeyPath, marks: dict[KeyPath, int], file: str) -> None:
    marks[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise ConfigError(
                    f"{file}:{key_node.start_mark.line + 1}: key {_dotted(path + (key,))!r} appears twice "
                    f"(first on line {seen[key]}); keep one."
                )
            seen[key] = key_node.start_mark.line + 1
            _collect_marks(value_node, path + (key,), marks, file)
            marks[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _collect_marks(item, path + (index,), marks, file)


# Limits on what a config file may cost to read (docs/failures.md lists them): a config is a few
# kilobytes, so these only stop hostile or broken files, quickly and with bounded memory.
MAX_CONFIG_BYTES = 256_000  # file size
MAX_DEPTH = 64  # nesting of mappings and lists
MAX_ALIASES = 1_000  # uses of *alias in one document
MAX_NODES = 10_000  # values once every alias is expanded (stops "billion laughs")

# YAML 1.2 floats: `1e-3`, `5E4`, `.5e1`. PyYAML follows YAML 1.1, which needs a dot and a signed
# exponent (`1.0e-3`), so it reads `learning_rate: 1e-3` as the string '1e-3'.
_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with YAML 1.2 floats and the limits above enforced while composing."""

    yaml_implicit_resolvers = {key: list(value) for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, stream: str, where: str):
        super().__init__(stream)
        self._where = where
        self._depth = 0
        self._aliases = 0
        self._nodes = 0

    def fetch_flow_collection_start(self, token_class):  # noqa: ANN001 - PyYAML's signature
        # Checked in the scanner: it keeps one pending key per open bracket and rescans them all
        # for every token, so `[[[[...` costs quadratic time before the parser sees any depth.
        if self.flow_level >= MAX_DEPTH:
            raise _limit(self._where, self.get_mark(), f"nesting deeper than {MAX_DEPTH} levels")
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _limit(self._where, self.peek_event().start_mark, f"more than {MAX_ALIASES} aliases (*name)")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _limit(self._where, self.peek_event().start_mark, f"more than {MAX_NODES} values")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _limit(self._where, self.peek_event().start_mark, f"nesting deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


    def construct_yaml_float(self, node):  # noqa: ANN001 - PyYAML's signature
        # `epochs: 1e3` is a whole number written briefly: an int, so integer fields take it too.
        text = str(node.value).replace("_", "")
        mantissa, _, exponent = text.lower().partition("e")
        if exponent and "." not in mantissa and _FLOAT_12.match(text) and 0 <= int(exponent) <= 18:
            return int(mantissa) * 10 ** int(exponent)
        return super().construct_yaml_float(node)


_ConfigLoader.add_constructor("tag:yaml.org,2002:float", _ConfigLoader.construct_yaml_float)
for _first in "-+0123456789.":
    _ConfigLoader.yaml_implicit_resolvers.setdefault(_first, []).append(("tag:yaml.org,2002:float", _FLOAT_12))


def _limit(where: str, mark: Any, what: str) -> ConfigError:
    line = f":{mark.line + 1}" if mark is not None else ""
    return ConfigError(
        f"{where}{line}: refused: {what}; a config may hold at most {MAX_DEPTH} levels of nesting, {MAX_ALIASES} aliases "
        f"and {MAX_NODES} values with aliases expanded (a YAML alias bomb or a recursive alias would never finish loading)."
    )


def _check_expansion(node: yaml.Node, where: str) -> None:
    """Refuse a document that, with aliases expanded, holds more than MAX_NODES values, nests deeper than
    MAX_DEPTH or refers to itself (linear time: each node is measured once)."""
    measured: dict[int, tuple[int, int]] = {}  # id -> (values, depth)
    active: set[int] = set()

    def measure(item: yaml.Node) -> tuple[int, int]:
        key = id(item)
        if key in measured:
            return measured[key]
        if key in active:
            raise _limit(where, item.start_mark, "a recursive alias (an anchor used inside itself)")
        active.add(key)
        children = [c for pair in item.value for c in pair] if isinstance(item, yaml.MappingNode) else (
            list(item.value) if isinstance(item, yaml.SequenceNode) else []
        )
        total, depth = 1, 0
        for child in children:
            child_total, child_depth = measure(child)
            total, depth = min(total + child_total, MAX_NODES + 1), max(depth, child_depth)
        if total > MAX_NODES:
            raise _limit(where, item.start_mark, f"more than {MAX_NODES} values once aliases are expanded")
        if depth + 1 > MAX_DEPTH:
            raise _limit(where, item.start_mark, f"nesting deeper than {MAX_DEPTH} levels once aliases are expanded")
        active.discard(key)
        measured[key] = (total, depth + 1)
        return measured[key]

    measure(node)


def parse_yaml(text: str, where: str) -> tuple[Any, yaml.Node | None]:
    """The value and node tree of one YAML document, with YAML 1.2 floats and the limits above."""
    loader = None
    try:
        loader = _ConfigLoader(text, where)  # the reader refuses control characters already here
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_expansion(node, where)
        return loader.construct_document(node), node
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{at}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: YAML syntax error: {exc}") from None
    except RecursionError:
        raise _limit(where, None, "nesting too deep to read") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: Path) -> tuple[dict[str, Any], _Source]:
    """Parse a YAML config file into a dict plus a map of key path -> line number."""
    file = check_path_text(path, "config file")
    path = Path(file)
    if not path.exists():
        raise ConfigError(f"config file not found: {file}")
    if path.is_dir():
        raise ConfigError(f"config path is a folder, not a YAML file: {file}")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{file}: refused: the file is larger than {MAX_CONFIG_BYTES:,} bytes; a config is a few kilobytes "
                "(is this the right file?)."
            )
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}") from None
    data, node = parse_yaml(text, file)
    if node is None or data is None:
        raise ConfigError(f"{file} is empty; a config is a YAML mapping such as 'data: {{dataset: mnist}}'.")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{file}: the top level must be a mapping of keys (name, data, model, ...), "
            f"got a {type(data).__name__}."
        )
    marks: dict[KeyPath, int] = {}
    _collect_marks(node, (), marks, file)
    return data, _Source(file, marks)


# --------------------------------------------------------------------------- --set overrides


def _dotted(path: KeyPath) -> str:
    return ".".join(str(part) for part in path) if path else "(top level)"


def _drops_a_comment(raw: str) -> bool:
    """True when YAML reads part of ``raw`` as a comment (``a #b`` is ``a``): text after the last token that is not blank."""
    if "#" not in raw:
        return False
    try:
        tokens = [token for token in yaml.scan(raw) if not isinstance(token, yaml.StreamEndToken)]
    except yaml.YAMLError:
        return False
    end = max((token.end_mark.index for token in tokens), default=0)
    return raw[end:].strip().startswith("#")


def parse_override(text: str) -> tuple[KeyPath, Any]:
    """``train.epochs=3`` -> (("train", "epochs"), 3); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, for example --set train.epochs=3")
    key, _, raw = text.partition("=")
    parts = tuple(key.strip().split("."))
    if not key.strip() or any(not part for part in parts):
        raise ConfigError(f"--set {text!r}: the key must be a dotted path such as train.epochs")
    try:
        value = parse_yaml(raw, f"--set {text}")[0] if raw.strip() else None
    except ConfigError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({exc.message.partition(': ')[2]})") from None
    if _drops_a_comment(raw):
        raise ConfigError(
            f"--set {text!r}: ' #' starts a YAML comment, so everything after it would be dropped from the value; "
            "quote the value (--set 'KEY=\"...\"') to keep a '#' in it (a password, a URL fragment)."
        )
    path: KeyPath = tuple(int(p) if p.isascii() and p.isdigit() else p for p in parts)  # '¹'.isdigit() is True
    return path, value


def apply_override(data: dict[str, Any], path: KeyPath, value: Any, text: str) -> None:
    """Set ``data[path] = value``, creating mappings on the way; a named spec string becomes a mapping."""
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        child = node[part] if _has(node, part) else None
        if child is None and depth == 0:
            child = _default_spec_name(part)  # `--set loss.from_logits=true` with no loss in the file
        if child is None:
            child = {}
        elif isinstance(child, str):
            child = {"name": child}  # `loss: mse` + `--set loss.reduction=sum`
        elif not isinstance(child, (dict, list)):
            raise ConfigError(
                f"--set {text}: {_dotted(path[: depth + 1])} is {child!r}, not a mapping, so it has no key {path[depth + 1]!r}"
            )
        _put(node, part, child, text)
        node = child
    _put(node, path[-1], value, text)


def _default_spec_name(key: str | int) -> str | None:
    """The default name of a top-level named spec (``loss``, ``optimizer``), so its parameters can be set alone."""
    field = Config.model_fields.get(key) if isinstance(key, str) else None
    default = field.get_default(call_default_factory=True) if field is not None else None
    return default.name if isinstance(default, NamedSpec) else None


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)


def _put(node: Any, part: str | int, value: Any, text: str) -> None:
    if isinstance(node, dict):
        node[part] = value
    elif isinstance(part, int) and 0 <= part < len(node):
        node[part] = value
    else:
        raise ConfigError(f"--set {text}: index {part!r} is out of range for a list of {len(node)} items")


# --------------------------------------------------------------------------- validation


def _model_fields(path: KeyPath, data: dict[str, Any]) -> list[str]:
    """The valid keys at ``path`` (for "did you mean"), walking the schema."""
    schema: Any = Config
    node: Any = data
    for part in path:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            field = schema.model_fields.get(part)
            if field is None:
                return []
            schema = field.annotation
            node = node.get(part) if isinstance(node, dict) else None
            if part == "model":
                schema = _model_class_for(node)
        else:
            return []
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return list(schema.model_fields)
    return []


def _nested_key(path: KeyPath, key: str, valid: list[str], data: dict[str, Any]) -> str | None:
    """A key one section down that ``key`` names or nearly names (``epochs`` at the top -> ``train.epochs``), or None.

    An exact name wins over a near one; among near ones, the closest across every section.
    """
    below = {f"{section}.{name}": name for section in valid for name in _model_fields((*path, section), data)}
    exact = [dotted for dotted, name in below.items() if name == key]
    if exact:
        return exact[0]
    near = closest(key, set(below.values()))
    return next((dotted for dotted, name in below.items() if name == near), None) if near else None


def _model_class_for(node: Any) -> type[BaseModel]:
    return model_class_for(node.get("type", DEFAULT_MODEL_TYPE) if isinstance(node, dict) else DEFAULT_MODEL_TYPE)


def _describe(error: dict[str, Any], data: dict[str, Any]) -> tuple[KeyPath, str]:
    kind = error["type"]
    loc: KeyPath = tuple(
        part for index, part in enumerate(error["loc"])
        if not (isinstance(part, str) and ((part in _UNION_TAGS and index > 0 and error["loc"][index - 1] == "model") or (_is_member_tag(part) and not (kind == "extra_forbidden" and index == len(error["loc"]) - 1))))
    )
    received = error.get("input")
    if kind == "extra_forbidden":
        valid = _model_fields(loc[:-1], data)
        suggestion = closest(str(loc[-1]), valid) or _nested_key(loc[:-1], str(loc[-1]), valid, data)
        message = f"unknown key {loc[-1]!r}"
        if suggestion:
            message += f" (did you mean {suggestion!r}?)"
        if valid:
            message += f"; valid keys here: {', '.join(valid)}"
        return loc, message
    if kind == "union_tag_invalid":
        tags = error.get("ctx", {}).get("expected_tags", "")
        return loc + ("type",), unknown_choice_message("type", error.get("ctx", {}).get("tag"), [t.strip(" '") for t in tags.split(",")]).split(": ", 1)[1]
    if kind == "union_tag_not_found":
        return loc + ("type",), "missing; say which model to build, e.g. type: mlp"
    if kind == "missing":
        return loc, "required key is missing"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return loc, f"{message}; got {received!r}" if not isinstance(received, dict) else message


_UNION_TAGS = set(MODEL_TYPES.names())  # pydantic names union members by their tag


_MEMBER_TAG = re.compile(r"(bool|str|int|float|none|constrained-\w+|(literal|dict|list|function-\w+)\[.*\])")


def _is_member_tag(part: str) -> bool:
    """pydantic's name for one member of a union (``literal['auto']``, ``bool``, ``dict[int,constrained-float]``), not a key."""
    return _MEMBER_TAG.fullmatch(part) is not None


def _join_alternatives(messages: list[str]) -> str:
    """The errors of each member of a union as one sentence: ``Input should be 'auto' or a valid boolean; got 'maybe'``."""
    if len(messages) == 1:
        return messages[0]
    tails = {message.rpartition("; got ")[2] for message in messages}
    got = f"; got {tails.pop()}" if len(tails) == 1 and all("; got " in message for message in messages) else ""
    heads = [message[: len(message) - len(got)] if got else message for message in messages]
    prefix = "Input should be "
    heads = [heads[0], *(head[len(prefix):] if head.startswith(prefix) and heads[0].startswith(prefix) else head for head in heads[1:])]
    return " or ".join(dict.fromkeys(heads)) + got


def validate(data: dict[str, Any], source: _Source) -> Config:
    """Turn a plain dict into a ``Config``; every problem is reported at once with its location."""
    model = data.get("model")
    if isinstance(model, dict) and "type" not in model:  # the README's promise: a model section without type is an mlp
        data = {**data, "model": {"type": DEFAULT_MODEL_TYPE, **model}}
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        by_key: dict[KeyPath, list[str]] = {}
        for error in exc.errors(include_url=False):
            loc, message = _describe(error, data)
            by_key.setdefault(loc, []).append(message)
        problems = [f"{source.where(loc)}: {_dotted(loc)}: {_join_alternatives(messages)}" for loc, messages in by_key.items()]
        count = len(problems)
        raise ConfigError(
            f"{source.file or 'config'}: {count} problem{'s' if count > 1 else ''} in the config:",
            problems=problems,
        ) from None


def run_name_from(text: str) -> str:
    """A valid run name (letters, digits, ``.``, ``_``, ``-``) made from a config file's name: ``my run é.yaml`` -> ``my-run-e``."""
    import unicodedata

    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text).strip("-.")
    return name[:100] or "run"


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), *, base: dict[str, Any] | None = None) -> Config:
    """Read ``path`` (or start from ``base``), apply ``--set`` overrides, validate and resolve paths."""
    if path is not None:
        data, source = read_yaml(Path(path))
        data.setdefault("name", run_name_from(Path(check_path_text(path, "config file")).stem))
    else:
        data, source = dict(base or {}), _Source(None)
    for text in overrides:
        key, value = parse_override(text)
        apply_override(data, key, value, text)
        source.overrides[key] = text
    config = validate(data, source)
    if config.data.path is not None:
        config.data.path = str(Path(config.data.path).expanduser().resolve())
    if config.train.sample_weights is not None:
        config.train.sample_weights = str(Path(config.train.sample_weights).expanduser().resolve())
    if getattr(config.model, "weights_kind", None) == "path":
        config.model.weights = str(Path(config.model.weights).expanduser().resolve())
    if path is not None:
        config._config_dir = Path(path).resolve().parent
    return config
