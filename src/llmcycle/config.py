"""Typed configs: YAML files and `--set a.b=c` overrides only ever fill fields of a pydantic model.

Every stage owns a config class derived from `StageConfig`; a run config (configs/*.yaml) holds one section per
stage. `load_config` accepts either a stage-only file or a run file (it then takes the stage's section).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

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


def validate(cls: type[T], data: Mapping[str, Any], source: str = "config") -> T:
    """Build `cls` from a mapping; every problem is reported with its key path in one line."""
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{key}: {msg}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


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
    return validate(cls, data, source)


def to_dict(cfg: BaseModel) -> dict[str, Any]:
    """JSON-safe dict of a config, for manifests and fingerprints."""
    return cfg.model_dump(mode="json")
