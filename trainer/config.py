"""The typed config: YAML (with line numbers) + ``--set`` overrides -> validated ``Config``.

Never imports TensorFlow: ``trainer validate`` and ``--help`` stay fast.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from .errors import ConfigError
from .registry import closest, unknown_choice_message

KeyPath = tuple[Union[str, int], ...]

ACTIVATIONS = (
    "relu", "gelu", "elu", "selu", "tanh", "sigmoid", "softplus", "softsign",
    "swish", "silu", "leaky_relu", "relu6", "mish", "hard_sigmoid", "exponential", "linear",
)


class _Strict(BaseModel):
    """Base for every config section: unknown keys are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class NamedSpec(BaseModel):
    """A catalogue entry chosen by ``name`` plus its parameters: ``adam`` or ``{name: adam, learning_rate: 0.01}``."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_serializer(mode="wrap")
    def _to_plain(self, handler):
        data = handler(self)
        return data["name"] if len(data) == 1 else data


class DataConfig(_Strict):
    dataset: str = "mnist"
    path: str | None = None
    validation: str | float = "test"
    limit: Annotated[int, Field(gt=0)] | None = None
    image_size: list[Annotated[int, Field(gt=0)]] | None = Field(default=None, min_length=2, max_length=2)
    color_mode: Literal["rgb", "grayscale"] | None = None

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from .data.catalog import dataset_names

        names = dataset_names()
        if value not in names:
            raise ValueError(unknown_choice_message("dataset", value, names).split(": ", 1)[1])
        return value

    @field_validator("validation", mode="before")
    @classmethod
    def _validation_choice(cls, value: Any) -> Any:
        allowed = "'test', 'none' or a fraction strictly between 0 and 1"
        if value is None:
            return "none"
        if isinstance(value, bool):
            raise ValueError(f"must be {allowed}")
        if isinstance(value, str):
            if value not in ("test", "none"):
                raise ValueError(f"must be {allowed}")
            return value
        if isinstance(value, (int, float)) and not (0.0 < float(value) < 1.0 and math.isfinite(value)):
            raise ValueError(f"must be {allowed}")
        if isinstance(value, (int, float)):
            return float(value)
        raise ValueError(f"must be {allowed}")

    @model_validator(mode="after")
    def _folder_only_keys(self) -> "DataConfig":
        """``image_size`` and ``color_mode`` describe how folder images are decoded; elsewhere the files decide."""
        if self.dataset != "folder":
            given = [key for key in ("image_size", "color_mode") if getattr(self, key) is not None]
            if given:
                raise ValueError(
                    f"{' and '.join(given)} only apply to dataset: folder (images of any size decoded from class folders); "
                    f"{self.dataset} images keep the shape of the files, so remove {' and '.join(given)}"
                )
        if self.dataset == "folder" and self.path is None:
            raise ValueError("dataset: folder needs data.path, a folder holding train/ and test/ with one subfolder per class")
        return self


class LabelsConfig(_Strict):
    encoding: Literal["auto", "sparse", "onehot"] = "auto"


class MLPConfig(_Strict):
    type: Literal["mlp"] = "mlp"
    hidden_units: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [64, 64])
    activation: str = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    output: Literal["softmax", "logits"] = "softmax"
    kernel_regularizer: dict[str, Any] | None = None
    bias_regularizer: dict[str, Any] | None = None
    activity_regularizer: dict[str, Any] | None = None
    kernel_constraint: Union[str, dict[str, Any], None] = None

    @field_validator("kernel_regularizer", "bias_regularizer", "activity_regularizer")
    @classmethod
    def _known_regularizer(cls, value: Any) -> Any:
        from .regularizers import check_regularizer

        return None if value is None else check_regularizer(value)

    @field_validator("kernel_constraint")
    @classmethod
    def _known_constraint(cls, value: Any) -> Any:
        from .regularizers import check_constraint

        return None if value is None else check_constraint(value)

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        if value not in ACTIVATIONS:
            raise ValueError(unknown_choice_message("activation", value, ACTIVATIONS).split(": ", 1)[1])
        return value


class HeadConfig(_Strict):
    """The trainable dense head on top of a frozen backbone."""

    hidden_units: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [4096, 4096])
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    activation: str = "relu"

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        return MLPConfig._known_activation(value)


class VGG16HeadConfig(_Strict):
    """A VGG16 convolutional backbone (frozen by default) under a dense head."""

    type: Literal["vgg16_head"] = "vgg16_head"
    weights: str = "imagenet"  # imagenet | none | a path to a weights file
    trainable_backbone: bool = False
    head: HeadConfig = Field(default_factory=HeadConfig)
    output: Literal["softmax", "logits"] = "softmax"
    preprocess: Literal["auto", "vgg16", "scale"] = "auto"

    @field_validator("weights", mode="before")
    @classmethod
    def _weights_choice(cls, value: Any) -> Any:
        if value is None:
            return "none"
        if isinstance(value, str) and not value.strip():
            raise ValueError("must be imagenet, none or the path to a weights file")
        return value

    @property
    def weights_kind(self) -> str:
        """``imagenet``, ``none`` or ``path``."""
        return self.weights if self.weights in ("imagenet", "none") else "path"

    @property
    def preprocessing(self) -> str:
        """``auto`` resolved: VGG16's own preprocessing for ImageNet weights, [0, 1] scaling otherwise."""
        if self.preprocess != "auto":
            return self.preprocess
        return "vgg16" if self.weights == "imagenet" else "scale"


ModelConfig = Annotated[Union[MLPConfig, VGG16HeadConfig], Field(discriminator="type")]


class TrainConfig(_Strict):
    epochs: Annotated[int, Field(gt=0)] = 10
    batch_size: Annotated[int, Field(gt=0)] = 32
    shuffle: bool = True
    mixed_precision: Union[Literal["auto"], bool] = "auto"
    class_weight: Union[Literal["balanced"], dict[int, Annotated[float, Field(ge=0.0)]], None] = None
    sample_weights: str | None = None  # a .npy file with one weight per training example
    steps_per_epoch: Annotated[int, Field(gt=0)] | None = None
    validation_steps: Annotated[int, Field(gt=0)] | None = None
    initial_epoch: Annotated[int, Field(ge=0)] = 0
    cache_features: Union[Literal["auto"], bool] = "auto"

    _refuse_dropped = model_validator(mode="before")(lambda cls, value: _refuse_keras2_keys(value))

    @model_validator(mode="after")
    def _one_kind_of_weights(self) -> "TrainConfig":
        if self.class_weight is not None and self.sample_weights is not None:
            raise ValueError("class_weight and sample_weights cannot be used together (Keras refuses both at once); keep one")
        if self.initial_epoch >= self.epochs:
            raise ValueError(f"initial_epoch ({self.initial_epoch}) must be smaller than epochs ({self.epochs})")
        return self


KERAS2_FIT_KEYS = ("workers", "use_multiprocessing", "max_queue_size")


def _refuse_keras2_keys(value: Any) -> Any:
    """``workers``/``use_multiprocessing``/``max_queue_size`` were Keras 2 ``fit`` settings; say so plainly."""
    if isinstance(value, dict):
        dropped = [key for key in KERAS2_FIT_KEYS if key in value]
        if dropped:
            raise ValueError(
                f"{', '.join(dropped)}: Keras 3 removed {'these' if len(dropped) > 1 else 'this'} model.fit setting"
                f"{'s' if len(dropped) > 1 else ''} (the tf.data pipeline already loads batches in parallel); delete "
                f"{'them' if len(dropped) > 1 else 'it'}"
            )
    return value


class CompileConfig(_Strict):
    """``model.compile`` settings beyond loss, optimizer and metrics."""

    loss_weights: Annotated[float, Field(ge=0.0)] | None = None  # one output, so one number
    weighted_metrics: list[NamedSpec] = Field(default_factory=list)
    run_eagerly: bool = False
    steps_per_execution: Union[Literal["auto"], Annotated[int, Field(gt=0)]] = "auto"
    jit_compile: Union[Literal["auto"], bool] = "auto"

    _refuse_dropped = model_validator(mode="before")(lambda cls, value: _refuse_keras2_keys(value))


class OutputConfig(_Strict):
    dir: str = "outputs"


class DistributeConfig(_Strict):
    """Beyond one device: ``mirrored`` (all local GPUs) or ``multi_worker`` (several processes, JAX backend).

    ``coordinator``, ``num_processes`` and ``process_id`` may also come from the environment or
    Slurm (``trainer.distribute.resolve_distribute``); docs/distributed.md lists the variables.
    """

    strategy: Literal["none", "mirrored", "multi_worker"] = "none"
    coordinator: str | None = None  # HOST:PORT of process 0; port+1 is used too
    num_processes: Annotated[int, Field(gt=0)] | None = None
    process_id: Annotated[int, Field(ge=0)] | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] = 120.0  # how long processes wait for each other at start

    @field_validator("coordinator")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            from .distribute import parse_coordinator

            try:
                parse_coordinator(value)
            except ConfigError as exc:
                raise ValueError(exc.message.split(": ", 1)[1]) from None
        return value

    @model_validator(mode="after")
    def _id_in_range(self) -> "DistributeConfig":
        if self.num_processes is not None and self.process_id is not None and self.process_id >= self.num_processes:
            raise ValueError(f"process_id {self.process_id} is out of range; with num_processes {self.num_processes} it must be 0..{self.num_processes - 1}")
        return self


class Config(_Strict):
    """The whole run, as the YAML file describes it."""

    name: str = Field(default="run", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 42  # NumPy's seed range
    data: DataConfig = Field(default_factory=DataConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    model: ModelConfig = Field(default_factory=MLPConfig)
    loss: NamedSpec = Field(default_factory=lambda: NamedSpec(name="sparse_categorical_crossentropy"))
    optimizer: NamedSpec = Field(default_factory=lambda: NamedSpec(name="adam"))
    metrics: list[NamedSpec] = Field(default_factory=lambda: [NamedSpec(name="accuracy")])
    train: TrainConfig = Field(default_factory=TrainConfig)
    compile: CompileConfig = Field(default_factory=CompileConfig)
    callbacks: list[NamedSpec] = Field(default_factory=list)
    device: Literal["auto", "cpu", "gpu"] = "auto"
    distribute: DistributeConfig = Field(default_factory=DistributeConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    _config_dir: Path | None = PrivateAttr(default=None)

    @property
    def config_dir(self) -> Path | None:
        """The folder of the YAML file (user ``module:attr`` code is imported from there first)."""
        return self._config_dir

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


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
        for prefix in prefixes:
            if prefix in self.marks and self.file:
                return f"{self.file}:{self.marks[prefix]}"
        return self.file or "config"


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


def read_yaml(path: Path) -> tuple[dict[str, Any], _Source]:
    """Parse a YAML config file into a dict plus a map of key path -> line number."""
    file = str(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {file}")
    if path.is_dir():
        raise ConfigError(f"config path is a folder, not a YAML file: {file}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: YAML syntax error: {exc}") from None
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


def parse_override(text: str) -> tuple[KeyPath, Any]:
    """``train.epochs=3`` -> (("train", "epochs"), 3); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, for example --set train.epochs=3")
    key, _, raw = text.partition("=")
    parts = tuple(key.strip().split("."))
    if not key.strip() or any(not part for part in parts):
        raise ConfigError(f"--set {text!r}: the key must be a dotted path such as train.epochs")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({exc})") from None
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


def _model_class_for(node: Any) -> type[BaseModel]:
    union = Config.model_fields["model"].annotation
    members = getattr(union, "__args__", (union,))
    kind = node.get("type", "mlp") if isinstance(node, dict) else "mlp"
    for member in members:
        if member.model_fields["type"].default == kind:
            return member
    return MLPConfig


def _describe(error: dict[str, Any], data: dict[str, Any]) -> tuple[KeyPath, str]:
    kind = error["type"]
    loc: KeyPath = tuple(
        part for index, part in enumerate(error["loc"])
        if not (isinstance(part, str) and (part in _UNION_TAGS or (_is_member_tag(part) and not (kind == "extra_forbidden" and index == len(error["loc"]) - 1))))
    )
    received = error.get("input")
    if kind == "extra_forbidden":
        valid = _model_fields(loc[:-1], data)
        suggestion = closest(str(loc[-1]), valid)
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


_UNION_TAGS = {"mlp", "vgg16_head"}


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


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), *, base: dict[str, Any] | None = None) -> Config:
    """Read ``path`` (or start from ``base``), apply ``--set`` overrides, validate and resolve paths."""
    if path is not None:
        data, source = read_yaml(Path(path))
        data.setdefault("name", Path(path).stem)
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
