import pytest
import yaml

from pzpipe import PipelineError
from pzpipe.run.config import config_hash, load_config, validate_config


def test_default_config_validates_and_fills_defaults(cfg):
    assert cfg["partition"]["chunk_rows"] == 130000
    assert cfg["zgrid"] == {"zmin": 0.0, "zmax": 3.0, "nz": 301}
    from pzpipe import algorithms

    assert set(cfg["algorithms"]) == set(algorithms.REGISTRY)
    assert [a for a, b in cfg["algorithms"].items() if b["enabled"]] == list(algorithms.default_names())
    assert cfg["partition"]["cuts"]["min_detected_bands"] == 1


def _raw(repo):
    with open(repo / "config" / "config.yaml") as f:
        return yaml.safe_load(f)


def test_unknown_key_is_named(repo):
    raw = _raw(repo)
    raw["partition"]["chunk_row"] = 1000
    with pytest.raises(PipelineError, match=r"partition.*chunk_row"):
        validate_config(raw)


def test_typo_in_algorithm_block(repo):
    raw = _raw(repo)
    raw["algorithms"]["bpz"] = {"enabeld": False}
    with pytest.raises(PipelineError, match=r"algorithms\.bpz.*enabeld"):
        validate_config(raw)


def test_wrong_type_is_named(repo):
    raw = _raw(repo)
    raw["partition"]["chunk_rows"] = "many"
    with pytest.raises(PipelineError, match=r"partition\.chunk_rows.*not of type"):
        validate_config(raw)


def test_unknown_algorithm_rejected(repo):
    raw = _raw(repo)
    raw["algorithms"]["annz2"] = {"enabled": True}
    with pytest.raises(PipelineError, match="annz2"):
        validate_config(raw)


def test_ref_band_must_be_a_band(repo):
    raw = _raw(repo)
    raw["ref_band"] = "w"
    with pytest.raises(PipelineError, match="ref_band"):
        validate_config(raw)


def test_deredden_needs_ebv_column(repo):
    raw = _raw(repo)
    raw["partition"]["deredden"]["enabled"] = True
    with pytest.raises(PipelineError, match="columns.ebv"):
        validate_config(raw)


def test_hash_is_stable_and_sensitive(cfg):
    h = config_hash(cfg)
    assert h == config_hash(dict(cfg))
    cfg2 = dict(cfg, release="other")
    assert config_hash(cfg2) != h


def test_release_name_rejects_shell_metacharacters(repo):
    raw = _raw(repo)
    raw["release"] = "dr1; rm -rf /"
    with pytest.raises(PipelineError, match="release"):
        validate_config(raw)


def test_estimator_blocks_and_defaults_come_from_the_registry(repo):
    """Every registered estimator has a block, enabled as its module declares, with its
    own settings' defaults (DNF's subchunk); a setting another estimator declares is a
    typo for this one."""
    from pzpipe import algorithms

    cfg = validate_config(_raw(repo))
    assert list(cfg["algorithms"]) == list(algorithms.REGISTRY)
    for name, algo in algorithms.REGISTRY.items():
        assert cfg["algorithms"][name]["enabled"] is algo.enabled_by_default
        for key, spec in algo.settings.items():
            assert cfg["algorithms"][name][key] == spec["default"]
    assert cfg["algorithms"]["dnf"]["subchunk"] == algorithms.get("dnf").settings["subchunk"]["default"]
    raw = _raw(repo)
    raw["algorithms"]["knn"] = {"subchunk": 10}
    with pytest.raises(PipelineError, match=r"algorithms\.knn.*subchunk"):
        validate_config(raw)
    raw = _raw(repo)
    raw["algorithms"]["dnf"] = {"subchunk": 0}
    with pytest.raises(PipelineError, match=r"algorithms\.dnf\.subchunk"):
        validate_config(raw)


def test_algorithm_modules_that_cannot_register_are_named(repo):
    raw = _raw(repo)
    raw["algorithm_modules"] = ["no_such_module_xyz"]
    with pytest.raises(PipelineError, match=r"algorithm_modules.*no_such_module_xyz"):
        validate_config(raw)
    raw["algorithm_modules"] = ["json"]          # importable, declares no ALGORITHM
    with pytest.raises(PipelineError, match=r"algorithm_modules.*json.*ALGORITHM"):
        validate_config(raw)


def test_code_defaults_are_the_schema_defaults():
    """The few defaults the code must know without a config (the reader's z grid, which
    runs without the schema's dependencies) equal the schema's."""
    import numpy as np

    from pzpipe.core import zgrid
    from pzpipe.run.config import schema_defaults

    z = schema_defaults("zgrid")
    np.testing.assert_array_equal(zgrid.DEFAULT, np.linspace(z["zmin"], z["zmax"], z["nz"]))
