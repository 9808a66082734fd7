"""The one config layer: a YAML file plus command-line values -> a validated pydantic model.

Every config of edgeft (finetune, launch, compress, federate, a cluster, a method's or a compression step's
options) is loaded here, so a user sees one kind of error whatever they got wrong: the file, the dotted
field (list items as `[i]`, with the item's `name` when it has one), what is wrong and what to do.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from edgeft.errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)
SEED_MAX = 2**32 - 1  # a run's seed: numpy's seeding refuses others (a traceback from deep in the run, before)


class ConfigFile(BaseModel):
    """Base of the configs a user writes (as PEFT's config classes): unknown keys are refused, and `load` /
    `from_dict` go through this module, so every command reads its file and reports problems the same way."""

    model_config = ConfigDict(extra="forbid")

    what: ClassVar[str] = "config"  # what the file is, in messages ("finetune config")
    keys_hint: ClassVar[str] = ""  # where its keys are described, said beside an unknown key

    @classmethod
    def prepare(cls, data: dict, source: str) -> dict:
        """The file's own layout (flat keys, shorthands) brought into the model's, before overrides go on."""
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str = "config"):
        return validate(cls, data, source, cls.what, cls.keys_hint)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict | None = None):
        """The config in the YAML file `path` (if any) with the command line's `overrides` (see `overlay`)
        over it; messages name the file, or "command line" when there is none."""
        source = str(path) if path else "command line"
        data = read_yaml(path, f"{cls.what} file") if path else {}
        return cls.from_dict(overlay(cls.prepare(data, source), overrides), source)


# -- reading -------------------------------------------------------------------------------------------
class _ScalarLoader(yaml.SafeLoader):
    """YAML's safe loader with YAML 1.2's numbers: no base-60 ones (PyYAML read `2:4`, an N:M sparsity pattern, as
    124 and `taps=1:30` as 90, silently), and `1e-4` is a float (PyYAML left it text without a dot)."""


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_ScalarLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_ScalarLoader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),  # no 1.1 octal (010)
    list("-+0123456789"))
_ScalarLoader.add_implicit_resolver(
    _FLOAT, re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"  # 1e-4, 3e5: floats in YAML 1.2, text in PyYAML's 1.1
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


class _UniqueKeyLoader(_ScalarLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: PyYAML keeps the last one,
    so a second `devices:` dropped every device listed above it without a word."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: keys given here override the base's
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {seen[key] + 1}); keep one",
                    key_node.start_mark)
            if isinstance(key, typing.Hashable):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def read_yaml(path: str | Path, what: str = "config file", hint: str = "") -> dict:
    """The mapping a YAML file holds; a missing file, bad bytes, bad YAML (line and column) or a
    top level that is not a mapping is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found{f' ({hint})' if hint else ''}.")
    try:
        data = yaml.load(path.read_bytes().decode("utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start} cannot be decoded): a {what} is YAML "
                          "text; check that this is the right file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', None) or err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level of the {what}.")
    return data


def parse_options(pairs: list[str] | None) -> dict:
    """`--option r=16 --option alpha=32` -> {"r": 16, "alpha": 32} (values parsed as YAML scalars)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--option '{pair}': expected KEY=VALUE.")
        key, value = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--option '{pair}': no option name before '='; expected KEY=VALUE.")
        if key in out:  # the last one won without a word
            raise ConfigError(f"--option {key} is given twice ({key}={out[key]!r} and '{pair}'); give it once.")
        try:
            out[key] = yaml.load(value, Loader=_ScalarLoader)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or err
            raise ConfigError(f"--option '{pair}': the value is not valid YAML ({problem}); write a list as [a, b] "
                              "and quote text holding brackets or colons") from None
    return out


def overlay(data: dict, overrides: dict | None) -> dict:
    """`data` with the command line's values over it. A None value was not given and changes nothing; a dotted
    key (`train.lr`) sets a key of a section; a mapping value (`method_options`) adds to the file's mapping."""
    out = dict(data)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        *sections, leaf = key.split(".")
        place = out
        for section in sections:
            inner = place.get(section)
            place[section] = dict(inner) if isinstance(inner, dict) else {}
            place = place[section]
        if isinstance(value, dict) and isinstance(place.get(leaf), dict):
            value = {**place[leaf], **value}
        place[leaf] = value
    return out


# -- validating and telling what is wrong ------------------------------------------------------------------
def validate(model: type[Model], data: object, source: str, what: str = "config", hint: str = "",
             at: tuple = ()) -> Model:
    """`model` built from `data`; invalid data is a ConfigError from `error_message`. `at` is where `data`
    sits in the file (("task",) for a config's task section), so the message names the field as written."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(error_message(err, source, model, data, what, hint, at)) from None


def format_problems(source: str, problems: list[str], what: str = "config") -> str:
    """One problem: `source: field: what is wrong`; several: a heading and one indented line each."""
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    return f"{source}: invalid {what} ({len(problems)} problems)\n" + "\n".join(f"  {p}" for p in problems)


def error_message(err: ValidationError, source: str, model: type[BaseModel] | None = None, data: object = None,
                  what: str = "config", hint: str = "", at: tuple = ()) -> str:
    """The message for every problem pydantic found: field path, what is wrong, what to do. `hint` says
    where the keys are described; an unknown key also gets the nearest known one."""
    problems = []
    for section in reversed(at):
        data = {section: data}
    for e in err.errors():
        where = field_path(tuple(at) + tuple(e["loc"]), data)
        if e["type"] == "extra_forbidden":
            parent = _model_at(model, tuple(e["loc"])[:-1])
            text = unknown_key(str(e["loc"][-1]), list(parent.model_fields) if parent else [], hint,
                               "option" if "option" in what else "key")
        elif e["type"] == "missing":
            text = "required key is missing"
            about = _field_at(model, tuple(e["loc"]))
            text += f" ({about.description})" if about is not None and about.description else ""
        else:
            text = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if problems and where and problems[-1].startswith(f"{where}: "):  # the branches of one union field
            problems[-1] += f", or {text}"
        else:
            problems.append(f"{where}: {text}" if where else text)
    return format_problems(source, problems, what)


def nest_flat_keys(data: dict, source: str, top: set, sections: dict[str, set]) -> tuple[dict, list]:
    """The command line's flat keys, as a config file may give them (`epochs: 2`, `train_samples: 64`), moved into
    the sections whose fields they are (`seed` into every section with one; `task_kind` is a section's `kind`).
    The same key given flat and nested with different values is refused. Returns the data and the keys that are
    neither `top`-level nor a section's, for the caller to name (finetune and launch share this)."""
    out, unplaced = {k: v for k, v in data.items() if k in top}, []
    for key, value in data.items():
        if key in top:
            continue
        field = "kind" if key == "task_kind" else key
        places = [section for section, keys in sections.items() if field in keys]
        if not places:
            unplaced.append(key)
        for section in places:
            inner = out.get(section)
            if inner is not None and not isinstance(inner, dict):
                continue  # the section's own error (not a mapping) is pydantic's to tell
            inner = dict(inner or {})
            if field in inner and inner[field] != value:
                raise ConfigError(f"{source}: {key} is given twice, flat ({value!r}) and under '{section}:' "
                                  f"({inner[field]!r}); keep one")
            inner[field] = value
            out[section] = inner
    return out, unplaced


def drop_retired_key(data, key: str, old, why: str):
    """`data` without `key`, an option that no longer acts: its old default (which configs and notes written then
    hold) is dropped, any other value refused with `why` (a pydantic before-validator's ValueError)."""
    if not isinstance(data, dict) or key not in data:
        return data
    if data[key] != old:
        raise ValueError(f"{key}: {data[key]!r}: {why}; leave {key} out")
    return {k: v for k, v in data.items() if k != key}


def unknown_key(key: str, known: list[str], hint: str = "", noun: str = "key") -> str:
    """'unknown key', the nearest known key when one is close, and where the keys are described."""
    near = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)  # `1: 2` has an int key
    text = f"unknown {noun}, did you mean '{near[0]}'?" if near else f"unknown {noun}"
    if hint:
        return f"{text} ({hint})"
    return text if near else f"{text} (check its spelling and place)"


def field_path(loc: tuple, data: object = None) -> str:
    """('devices', 0, 'memory_gb') -> 'devices[0](phone-a).memory_gb' (the item's name read from `data`);
    pydantic's own steps (validator and union tags) are left out."""
    parts, node = [], data
    for item in loc:
        if isinstance(item, int):
            name = ""
            inside = isinstance(node, list) and 0 <= item < len(node)
            if inside and isinstance(node[item], dict):
                name = node[item].get("name", "")
            parts.append(f"[{item}]" + (f"({name})" if name else ""))
            node = node[item] if inside else None
        else:
            if _is_internal(str(item)):
                continue
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts)


def _is_internal(item: str) -> bool:
    """pydantic's names for a validator or a union branch ('function-after[...]', 'float', "literal['auto']")."""
    return "[" in item or item in ("float", "int", "str", "bool", "list", "dict", "tuple", "none")


def _model_in(annotation) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (Optional[X], list[X], dict[str, X], X | Y), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, tuple, dict, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _model_at(model: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    for item in loc:
        if model is None:
            return None
        if isinstance(item, int) or _is_internal(str(item)):
            continue
        field = model.model_fields.get(item)
        model = _model_in(field.annotation) if field is not None else None
    return model


def _field_at(model, loc: tuple):
    parent = _model_at(model, loc[:-1])
    return parent.model_fields.get(loc[-1]) if parent is not None and loc else None
