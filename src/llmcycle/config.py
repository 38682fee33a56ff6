"""Typed configs: YAML files and `--set a.b=c` overrides only ever fill fields of a pydantic model.

Every stage owns a config class derived from `StageConfig`; a run config (configs/*.yaml) holds one section per
stage. `load_config` accepts either a stage-only file or a run file (it then takes the stage's section).
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from llmcycle.errors import ConfigError

T = TypeVar("T", bound=BaseModel)

# shipped configs: the repository's configs/ in a source checkout, llmcycle/configs/ in an installed wheel
CONFIG_DIRS = (Path(__file__).resolve().parents[2] / "configs", Path(__file__).resolve().parent / "configs")


def named_config(name: str | Path) -> Path | None:
    """A shipped config by name (`default`, `tiny.yaml`, `configs/default.yaml` from any folder), or None."""
    path = Path(name)
    if path.parent not in (Path("."), Path("configs")) or path.suffix not in ("", ".yaml"):
        return None
    for folder in CONFIG_DIRS:
        candidate = folder / (path.name if path.suffix else f"{path.name}.yaml")
        if candidate.is_file():
            return candidate
    return None


class StageConfig(BaseModel):
    """Base for every config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        named = named_config(path)  # a shipped config's name such as `tiny`
        if named is None:
            raise ConfigError(f"{path}: config file not found (shipped configs: {', '.join(shipped_configs())})")
        path = named
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys to values")
    return data


def shipped_configs() -> list[str]:
    return sorted({p.stem for folder in CONFIG_DIRS if folder.is_dir() for p in folder.glob("*.yaml")})


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (["a", "b"], yaml-parsed "c"), so `--set lr=3e-4` gives a float and `--set x=null` gives None."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.lr=3e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def validate(cls: type[T], data: Mapping[str, Any], source: str = "config", stage: str | None = None) -> T:
    """Build `cls` from a mapping; every problem is reported with its key path in one line. An unknown key is
    answered with the close matches among its section's keys and where the keys are listed."""
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            key = ".".join(loc) or "(top level)"
            msg = unknown_key_message(cls, loc) if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{key}: {msg}")
        unknown = any(err["type"] == "extra_forbidden" for err in exc.errors())
        hint = f" (keys: `llmcycle config show {stage or 'run'}`, or docs/reference/config.md)" if unknown else ""
        raise ConfigError(f"{source}: " + "; ".join(problems) + hint) from None


def unknown_key_message(cls: type[BaseModel], loc: list[str]) -> str:
    """'unknown key (did you mean lora.r?)': close matches among the keys beside it, else among every key."""
    section = section_class(cls, loc[:-1])
    siblings = list(section.model_fields) if section is not None else []
    prefix = ".".join(loc[:-1] + [""]) if loc[:-1] else ""
    close = [prefix + m for m in difflib.get_close_matches(loc[-1], siblings, n=3, cutoff=0.6)]
    if not close:  # the right key in another section: `--set rank=8` for lora.r
        everywhere = [key for key, _, _ in walk_keys(cls)]
        close = difflib.get_close_matches(".".join(loc), everywhere, n=3, cutoff=0.6)
        close += [k for k in everywhere if k.rsplit(".", 1)[-1] == loc[-1] and k not in close][:3]
    return f"unknown key (did you mean {' or '.join(close)}?)" if close else "unknown key"


def section_class(cls: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    """The config class that holds the keys under `path` (a.b -> the model class of field b of field a)."""
    for name in path:
        field = cls.model_fields.get(name)
        inner = model_class(field.annotation) if field is not None else None
        if inner is None:
            return None
        cls = inner
    return cls


def model_class(annotation: Any) -> type[BaseModel] | None:
    """The config class of a field's annotation (`LoraOptions`, `LoraOptions | None`), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return found[0] if len(found) == 1 and typing.get_origin(annotation) not in (dict, list) else None


def walk_keys(model: BaseModel | type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, pydantic field, default value) for every leaf key, nested sections flattened into dotted keys.
    `model` is an instance (its values are the defaults: a run's can differ from the class's) or a class."""
    cls = model if isinstance(model, type) else type(model)
    for name, field in cls.model_fields.items():
        value = field.get_default(call_default_factory=True) if isinstance(model, type) else getattr(model, name)
        if isinstance(value, BaseModel):
            yield from walk_keys(value, f"{prefix}{name}.")
            continue
        yield f"{prefix}{name}", field, value
        item = element_model(field.annotation)
        if item is not None:  # a dict or list of sections (a sweep's params): each item's keys
            mark = "NAME." if typing.get_origin(field.annotation) is dict else "[]."
            yield from walk_keys(item, f"{prefix}{name}.{mark}")
        optional = model_class(field.annotation)
        if value is None and optional is not None:  # an optional section, off by default (`fim:`): its keys
            yield from walk_keys(optional, f"{prefix}{name}.")


def element_model(annotation: Any) -> type[BaseModel] | None:
    """The model class held by a `dict[str, Model]` or `list[Model]` annotation, else None."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (dict, list) and args and isinstance(args[-1], type) \
            and issubclass(args[-1], BaseModel):
        return args[-1]
    return None


def load_config(
    cls: type[T],
    config_path: str | Path | None = None,
    sets: Iterable[str] = (),
    section: str | None = None,
    **flags: Any,
) -> T:
    """Config from (in increasing priority) defaults, a YAML file, `--set` overrides and explicit CLI flags.

    A file whose top level has key `section` (a run config) contributes that section only. Flags that are None
    were not given and do not override anything.
    """
    data: dict[str, Any] = {}
    source = "config"
    if config_path is not None:
        source = str(config_path)
        raw = read_yaml(config_path)
        if section is not None and isinstance(raw.get(section), dict):
            raw = raw[section]
        data.update(raw)
    for text in sets:
        keys, value = parse_override(text)
        if section is not None and keys[0] == section and len(keys) > 1:
            keys = keys[1:]
        set_path(data, keys, value)
    for key, value in flags.items():
        if value is not None:
            data[key] = value
    return validate(cls, data, source, section)


def to_dict(cfg: BaseModel) -> dict[str, Any]:
    """JSON-safe dict of a config, for manifests and fingerprints."""
    return cfg.model_dump(mode="json")
