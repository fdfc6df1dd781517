"""Proxy specs ship with the package and resolve by name from any folder; ./proxies/ overrides."""

import json

import pytest

from nascli.config import BUILTIN_PROXIES, ProxySpec, load_spec, resolve_proxy
from nascli.errors import SpecError


def test_builtin_specs_resolve_from_any_folder_and_a_local_one_overrides(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)  # no ./proxies here: only what the package ships
    assert resolve_proxy("nas-fcos") == BUILTIN_PROXIES / "nas-fcos.yaml"
    assert load_spec(ProxySpec, resolve_proxy("nas-fpn")).space == "nas-fpn"
    with pytest.raises(SpecError, match="nas-fcos-demo"):  # the error lists what exists
        resolve_proxy("nas-fcos-typo")

    (tmp_path / "proxies").mkdir()
    (tmp_path / "proxies" / "nas-fcos.yaml").write_text("space: nas-fcos\nwidth: 8\n")
    assert load_spec(ProxySpec, resolve_proxy("nas-fcos")).width == 8
    code, out, _ = run_cli("proxies", "--json")
    assert code == 0
    listed = {r["name"]: r for r in json.loads(out)}
    assert listed["nas-fcos"]["from"] == "./proxies" and listed["nas-fcos"]["space"] == "nas-fcos"
    assert listed["nas-fpn"]["from"] == "built-in" and listed["nas-fcos-demo"]["from"] == "built-in"


def test_one_trial_search_by_builtin_name_from_elsewhere(tiny_cache, tmp_path, monkeypatch, run_cli):
    """The whole path from a name to a finished run, from a folder with no ./proxies. The shipped
    specs take minutes on real data, so the package's folder holds a tiny spec here."""
    from nascli import config
    from conftest import TINY_PROXY

    shipped = tmp_path / "site-packages" / "nascli" / "proxies"
    shipped.mkdir(parents=True)
    (shipped / "tiny-builtin.yaml").write_text(TINY_PROXY)
    monkeypatch.setattr(config, "BUILTIN_PROXIES", shipped)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = run_cli("search", "--method", "random", "--proxy", "tiny-builtin", "--cache", tiny_cache,
                             "--trials", "1", "--run", "r", "--json")
    assert code == 0, err
    assert json.loads(out)["finished"] == 1 and (elsewhere / "r" / "run.db").is_file()
    assert load_spec(ProxySpec, elsewhere / "r" / "spec.yaml").width == 8  # the tiny spec, copied into the run


@pytest.mark.parametrize("section, text, key", [
    ("controller", "space: nas-fcos\ncontroller: {lr: 0.005, bach: 4}\n", "bach"),
    ("darts", "space: auto-fpn\ninputs: [c3, c4, c5]\ndarts: {lamda: small}\n", "lamda"),
    ("evolution", "space: detnas\nevolution: {population: 1}\n", "population"),
])
def test_a_typo_in_an_options_section_is_one_line_naming_the_file_section_and_key(section, text, key, tmp_path,
                                                                                  tiny_cache, run_cli):
    """Was: a misspelt controller key passed silently and the default ran. Now `check` and `search`
    refuse it before anything is written (exit 2), whatever the method."""
    spec = tmp_path / "mine.yaml"
    spec.write_text(text)
    code, _, err = run_cli("check", spec)
    assert code == 2 and f"mine.yaml: section '{section}': field '{key}'" in err and len(err.strip().splitlines()) == 1
    method = {"controller": "nas-fcos", "darts": "auto-fpn", "evolution": "detnas"}[section]
    from nascli.search import run_search

    with pytest.raises(SpecError, match=f"section '{section}': field '{key}'"):
        run_search(method, str(spec), tiny_cache, 1, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_registry_refuses_a_second_entry_of_one_name():
    from dataclasses import replace

    from nascli.methods import METHODS, registry

    nas_fcos = METHODS["nas-fcos"]
    assert list(registry(nas_fcos, METHODS["detnas"])) == ["nas-fcos", "detnas"]
    with pytest.raises(ValueError, match="'nas-fcos' is registered twice"):
        registry(nas_fcos, replace(METHODS["nas-fpn"], name="nas-fcos"))
    with pytest.raises(ValueError, match="'random' is random search's name"):
        registry(replace(nas_fcos, name="random"))


def test_trials_receive_the_spec_with_its_reward_kind_resolved_once(tiny_cache, tiny_proxy, tmp_path):
    """The method is resolved when the search starts: the spec every trial gets says which reward
    it scores (the tiny spec leaves `reward` out: NAS-FCOS's is the loss), so no trial consults the
    registry again."""
    from nascli.search import run_search
    from nascli.trial import TrialResult

    seen = []
    run_search("nas-fcos", tiny_proxy, tiny_cache, 1, tmp_path / "run",
               evaluate_fn=lambda g, spec, *a, **k: seen.append(spec.reward) or TrialResult("done", reward=-1.0))
    assert load_spec(ProxySpec, tiny_proxy).reward is None and seen and set(seen) == {"loss"}


def test_the_spaces_a_spec_may_name_are_the_registrys(monkeypatch):
    """A misspelt space is one line naming the field and the registered spaces; a space a newly
    registered method searches is accepted with no edit to config.py."""
    from dataclasses import replace
    from types import SimpleNamespace

    from nascli.config import ProxySpec, validate
    from nascli.errors import SpecError
    from nascli.methods import METHODS

    with pytest.raises(SpecError, match=r"^toy\.yaml: field 'space': 'detnass' is not a space any method searches; "
                                        r"choose one of nas-fcos, nas-fpn"):
        validate(ProxySpec, {"space": "detnass"}, "toy.yaml")
    monkeypatch.setitem(METHODS, "toy", replace(METHODS["nas-fcos"], name="toy", space=SimpleNamespace(SPACE="toy")))
    assert validate(ProxySpec, {"space": "toy"}, "toy.yaml").space == "toy"
