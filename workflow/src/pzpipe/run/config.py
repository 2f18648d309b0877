"""Load, validate and hash the pipeline configuration.

The schema (workflow/schemas/config.schema.yaml) forbids unknown keys, so a typo
stops the run with a message naming the key, and fills in defaults. Its ``algorithms``
section is completed from the estimator registry (``pzpipe.algorithms``): one block per
registered estimator (built-in, or listed in ``algorithm_modules``), made of the shared
keys (``definitions.algo``: enabled, inform, estimate, fast) and the estimator's own
``settings`` as its module declares them; ``enabled`` defaults to the estimator's
``enabled_by_default``. The schema file and those declarations are the only sources of
defaults (``schema_defaults``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from pzpipe import PipelineError
from pzpipe import algorithms as _algorithms

REPO_ROOT = Path(__file__).resolve().parents[4]   # the clone (meaningless when installed)
# Package data, so that a non-editable install finds it; in a clone it is a symlink to
# the canonical workflow/schemas/config.schema.yaml (Snakemake's place for it).
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "data" / "config.schema.yaml"


def _load_schema() -> dict:
    """The schema with its ``algorithms`` section built from the registry."""
    with open(SCHEMA_PATH) as f:
        schema = yaml.safe_load(f)
    schema["properties"]["algorithms"]["properties"] = algorithm_schemas(schema)
    return schema


def algorithm_schemas(schema: dict) -> dict:
    """``algorithms.<name>`` of every registered estimator, in registry order."""
    shared = schema["definitions"]["algo"]
    out = {}
    for name, algo in _algorithms.REGISTRY.items():
        block = copy.deepcopy(shared)
        block["default"] = {}
        block["properties"]["enabled"] = {**block["properties"]["enabled"],
                                          "default": bool(algo.enabled_by_default)}
        clash = set(algo.settings) & set(block["properties"])
        if clash:
            raise ValueError(f"estimator '{name}' declares settings {sorted(clash)} that are "
                             f"shared keys of every estimator")
        block["properties"].update(copy.deepcopy(algo.settings))
        block["description"] = f"{algo.title or name} ({algo.module}.{algo.estimator})"
        out[name] = block
    return out


def _load_modules(config: dict) -> None:
    """Register the estimators of ``algorithm_modules`` before the schema is built."""
    mods = config.get("algorithm_modules") or []
    if not isinstance(mods, list) or not all(isinstance(m, str) for m in mods):
        raise PipelineError("config error at 'algorithm_modules': a list of importable "
                            "module names (each declaring ALGORITHM)")
    for m in mods:
        try:
            _algorithms.load_modules([m])
        except (ImportError, AttributeError, ValueError, TypeError) as exc:
            raise PipelineError(f"config error at 'algorithm_modules': cannot register "
                                f"'{m}': {exc} (is its directory on PYTHONPATH?)") from None


def _fill_defaults(instance: Any, schema: dict, root: dict) -> Any:
    """Recursively fill 'default' values of object properties (draft 2020-12 subset)."""
    if "$ref" in schema:
        ref = schema["$ref"].split("/")[1:]
        target = root
        for part in ref:
            target = target[part]
        return _fill_defaults(instance, target, root)
    if isinstance(instance, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key not in instance:
                target = sub
                if "$ref" in sub:
                    target = root
                    for part in sub["$ref"].split("/")[1:]:
                        target = target[part]
                if "default" in target:
                    instance[key] = copy.deepcopy(target["default"])
            if key in instance:
                instance[key] = _fill_defaults(instance[key], sub, root)
    return instance


def _format_error(err: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    msg = err.message
    if err.validator == "additionalProperties":
        return (f"config error at '{where}': {msg}. Check the spelling against "
                f"config/README.md (unknown keys are not allowed).")
    return f"config error at '{where}': {msg}"


def validate_config(config: dict) -> dict:
    """Return a validated copy of ``config`` with defaults filled in.

    Raises PipelineError naming the offending key.
    """
    _load_modules(config)
    schema = _load_schema()
    cfg = copy.deepcopy(dict(config))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise PipelineError("\n".join(_format_error(e) for e in errors[:5]))
    cfg = _fill_defaults(cfg, schema, schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise PipelineError("\n".join(_format_error(e) for e in errors[:5]))
    for key in ("mag", "mag_err", "flux", "flux_err"):
        try:
            cfg["columns"][key].format(band="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise PipelineError(f"config error at 'columns.{key}': template "
                                f"'{cfg['columns'][key]}' may only use the placeholder "
                                f"{{band}} ({exc!r})") from None
    paths = [(f"inputs.files[{i}]", p) for i, p in enumerate(cfg["inputs"]["files"])]
    paths += [(f"{s}.file", cfg[s]["file"]) for s in ("training", "validation")]
    for where, p in paths:
        if "{" in p or "}" in p:
            raise PipelineError(
                f"config error at '{where}': path '{p}' contains '{{' or '}}', which Snakemake "
                f"reads as a wildcard. Rename the file or link it under a name without braces.")
    if cfg["ref_band"] not in cfg["bands"]:
        raise PipelineError(
            f"config error at 'ref_band': '{cfg['ref_band']}' is not one of bands {cfg['bands']}")
    if cfg["zgrid"]["zmax"] <= cfg["zgrid"]["zmin"]:
        raise PipelineError("config error at 'zgrid': zmax must be larger than zmin")
    dered = cfg["partition"]["deredden"]
    if dered["enabled"]:
        if not cfg["columns"]["ebv"]:
            raise PipelineError("config error at 'partition.deredden': enabled but "
                                "'columns.ebv' (the E(B-V) column) is not set")
        missing = [b for b in cfg["bands"] if b not in dered["coefficients"]]
        if missing:
            raise PipelineError(f"config error at 'partition.deredden.coefficients': "
                                f"no coefficient for band(s) {missing}")
    check_validate_section(cfg)
    inp = cfg["inputs"]
    if not inp["files"] and not inp["hats"] and inp["descriptor"] is None:
        raise PipelineError("config error at 'inputs': give 'hats' (a HATS Object catalog), "
                            "'files' (catalog files, directories or globs) or 'descriptor' "
                            "(for planning)")
    if inp["files"] and inp["hats"]:
        raise PipelineError("config error at 'inputs': both 'hats' and 'files' are set (the "
                            "default config sets inputs.hats to the demo catalog): to use "
                            "inputs.files, add 'hats: null' under 'inputs' in your config file")
    if inp["hats"] and ("{" in inp["hats"] or "}" in inp["hats"]):
        raise PipelineError(f"config error at 'inputs.hats': path '{inp['hats']}' contains "
                            f"'{{' or '}}', which Snakemake reads as a wildcard")
    return cfg


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    if overrides:
        cfg = deep_update(cfg, overrides)
    return validate_config(cfg)


def deep_update(base: dict, new: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_path(path: str) -> str:
    """Resolve 'rail:relative/path' inside the installed RAIL package; other paths as is."""
    if path.startswith("rail:"):
        from rail.utils.path_utils import find_rail_file

        try:
            return str(find_rail_file(path[len("rail:"):]))
        except Exception as exc:  # noqa: BLE001
            raise PipelineError(f"cannot find '{path}' inside the installed RAIL packages "
                                f"({exc}); is pz-rail-base installed?") from exc
    return path


def schema_defaults(section: str) -> dict:
    """The defaults of the top-level config ``section`` as the schema fills them in
    (``validate_config`` of a config without that section): the schema is the one
    source of defaults."""
    schema = _load_schema()
    sub = {"definitions": schema.get("definitions", {}), "type": "object",
           "properties": {section: schema["properties"][section]}}
    return _fill_defaults({}, sub, sub)[section]


def config_hash(cfg: dict, sections: list[str] | None = None) -> str:
    """sha256 of the canonical JSON of the config (or of some of its sections)."""
    part = cfg if sections is None else {k: cfg.get(k) for k in sections}
    blob = json.dumps(part, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def enabled_algorithms(cfg: dict) -> list[str]:
    """The enabled estimators in registry order (the release's column order)."""
    on = {name for name, a in cfg["algorithms"].items() if a.get("enabled", True)}
    return [n for n in _algorithms.REGISTRY if n in on] + sorted(on - set(_algorithms.REGISTRY))


def check_validate_section(cfg: dict) -> None:
    """Checks of the ``validate`` section the schema cannot express."""
    v = cfg["validate"]

    def edges(e, where):
        if e is not None and not all(b > a for a, b in zip(e, e[1:])):
            raise PipelineError(f"config error at '{where}': edges must be strictly "
                                f"increasing, got {e}")

    for key in ("mag_edges", "z_edges", "tomo_edges"):
        edges(v["bins"][key], f"validate.bins.{key}")
    for kind in ("requirements", "tomo_requirements"):
        for name, rs in v[kind].items():
            s = rs["sample"]
            if s["z_max"] <= s["z_min"]:
                raise PipelineError(f"config error at 'validate.{kind}.{name}.sample': z_max "
                                    f"must be larger than z_min")
            if kind == "tomo_requirements":
                edges(rs["tomo_edges"], f"validate.{kind}.{name}.tomo_edges")
