"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Base class: bad input, bad config, missing artifact. Never a bug in llmcycle."""


class ConfigError(UserError):
    """A config file, key or value is wrong."""


class DataError(UserError):
    """A data file is missing, malformed or yields nothing usable."""


class ArtifactError(UserError):
    """An artifact dir is missing, incomplete or not the kind a stage expects."""


class ModelLoadError(UserError):
    """A model, tokenizer or adapter cannot be loaded."""


class HardwareError(UserError):
    """The requested method needs hardware this machine lacks (e.g. QLoRA without CUDA)."""


class TrainingError(UserError):
    """Training cannot continue (NaN loss, no checkpoint to resume from, ...)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, for wrapping library errors into one-line user errors."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__
