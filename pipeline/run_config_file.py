"""A run's whole configuration as one YAML file: `speechpipe run --print-config > run.yaml`, then
`speechpipe run --config run.yaml` (and the same for `speechpipe compile`); flags given on the
command line override the file.

The file is the RunConfig's fields in their order, nested configurations (features, ctc, embedder,
...) as mappings, tuples as lists. Reading is strict: an unknown key anywhere is an error that
names it (a misspelt setting must not run silently on its default), a value of the wrong type too;
a key left out keeps its default. Printing and reading are exact inverses: print -> read -> print
gives the same text, and reading the printed defaults gives `RunConfig()`. No TensorFlow, no TFX.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, Tuple

from speechpipe.audio.augment import AugmentConfig
from speechpipe.io.storage import is_uri
from speechpipe.pipeline.run_config import RunConfig
from speechpipe.validation import ConfigError

HEADER = (
    "# speechpipe run configuration: `speechpipe run --config FILE` or `speechpipe compile --config FILE`\n"
    "# reads it; flags given on the command line override it. A key left out keeps its default; an\n"
    "# unknown key is an error.\n"
)

# Fields a run file does not hold, with why: the pipeline sets them from another field.
_DERIVED: Dict[Tuple[str, ...], str] = {
    ("ctc", "inventory"): "the CTC branch's phone set follows `language`; set language instead",
    ("embedder", "model", "n_bins"): "the embedder's trainer takes it from the features it is given",
}


def to_yaml(config: RunConfig) -> str:
    """The config as the text `--print-config` prints."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def short_lists(dumper: yaml.SafeDumper, items: list) -> Any:
        # [100, 100, 150] on one line; a list holding mappings or lists stays a block.
        flow = all(not isinstance(i, (dict, list)) for i in items)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)

    Dumper.add_representer(list, short_lists)
    body = yaml.dump(_plain(config, ()), Dumper=Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return HEADER + body


def from_yaml(text: str, source: str = "run file") -> RunConfig:
    """The RunConfig a run file describes (not yet validated: `validate_run_config` checks values
    against each other and the spans against the file system)."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not YAML: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: need a mapping of RunConfig settings, got {type(data).__name__}")
    return _build(RunConfig, data, RunConfig(), ())


def read_config_file(path: str) -> RunConfig:
    """The RunConfig of a run file: a local path, or an object on storage (gs://, s3://)."""
    if is_uri(path):
        from speechpipe.io import storage

        text = storage.read_bytes(path).decode("utf-8")
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as error:
            raise ConfigError(f"--config {path!r}: {error.strerror}") from None
    return from_yaml(text, source=path)


# --------------------------------------------------------------------------------- conversion


def _plain(value: Any, path: Tuple[str, ...]) -> Any:
    """Dataclasses as mappings in field order (less the derived fields), tuples as lists."""
    if dataclasses.is_dataclass(value):
        return {
            f.name: _plain(getattr(value, f.name), path + (f.name,))
            for f in dataclasses.fields(value)
            if path + (f.name,) not in _DERIVED
        }
    if isinstance(value, (tuple, list)):
        return [_plain(v, path) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, path + (k,)) for k, v in value.items()}
    return value


def _name(path: Tuple[str, ...]) -> str:
    return ".".join(path) or "run file"


def _build(cls: type, data: Any, default: Any, path: Tuple[str, ...]) -> Any:
    """An instance of the dataclass `cls` from a mapping: `default` with the keys given replaced."""
    if not isinstance(data, dict):
        raise ConfigError(f"{_name(path)}: need a mapping of settings, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if path + (key,) in _DERIVED:
            raise ConfigError(f"{_name(path + (key,))}: not a run file setting: {_DERIVED[path + (key,)]}")
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        names = ", ".join(_name(path + (k,)) for k in unknown)
        known = ", ".join(f for f in fields if path + (f,) not in _DERIVED)
        raise ConfigError(f"unknown setting(s) in the run file: {names} (known here: {known})")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        inner_default = getattr(default, key) if default is not None else None
        values[key] = _convert(hints[key], value, inner_default, path + (key,))
    return dataclasses.replace(default, **values) if default is not None else cls(**values)


def _convert(hint: Any, value: Any, default: Any, path: Tuple[str, ...]) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if path == ("speaker_augment",):
        # AugmentConfig json (the feature job's); held as json so that the data key can hash it.
        if value is None:
            return None
        return _build(AugmentConfig, value, AugmentConfig(), path).to_json()
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, default, path)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, default if default is not None else hint(), path)
    if origin in (tuple, typing.Tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{_name(path)}: need a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, None, path) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{_name(path)}: need {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, None, path) for a, v in zip(args, value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{_name(path)}: need true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{_name(path)}: need an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{_name(path)}: need a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{_name(path)}: need a string, got {value!r}")
        return value
    return value
