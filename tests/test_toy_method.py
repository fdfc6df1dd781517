"""The method contract kept (issue 44): a sixth method added as one module and one entry
(tests/toy_method.py), registered from outside nascli/, runs through search, random search over its
space, `runs show --arch`, retrain, compare and report with no other file touched."""

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import toy_method

from nascli.methods import METHODS, lookup, method_names, register
from nascli.spaces import SPACES, load_genotype

TOY_PROXY = ("space: toy-depth\ninputs: [c3, c4, c5]\nwidth: 8\nepochs: 1\nbatch_size: 6\nlr: 0.001\n"
             "rescore_top: 0\nrescore_seeds: 2\n")  # no re-scoring: the contract, not the protocol, is tested here


@pytest.fixture
def toy():
    register(toy_method.METHOD)
    try:
        yield toy_method.METHOD
    finally:
        METHODS.pop("toy")
        SPACES.pop(toy_method.SPACE)


def test_a_method_from_one_module_and_one_entry_runs_every_command(toy, tiny_cache, tiny_test, run_cli, tmp_path):
    proxy, run = tmp_path / "toy.yaml", tmp_path / "run"
    proxy.write_text(TOY_PROXY)
    assert "toy" in method_names() and lookup("toy") is toy
    code, out, err = run_cli("search", "--method", "toy", "--proxy", proxy, "--cache", tiny_cache, "--trials", 2,
                             "--run", run, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["finished"] == 2 and summary["failed"] == 0
    trials = summary["top"]
    assert trials and all(load_genotype(t["genotype"]).space == "toy-depth" for t in trials)

    code, out, err = run_cli("runs", "show", run, "--arch", trials[0]["trial"])
    assert code == 0, err
    assert f"trial {trials[0]['trial']} (toy-depth)" in out
    assert (run / f"arch-{trials[0]['trial']}.png").read_bytes()[:4] == b"\x89PNG"  # its description, boxed

    code, out, err = run_cli("retrain", run, "--top", 1, "--epochs", 1, "--lr-grid", "0.01", "--seeds", 2,
                             "--val", tiny_test)
    assert code == 0, err
    code, out, err = run_cli("compare", run, "--json")
    assert code == 0, err
    compared = json.loads(out)
    done = {a["arch"] for a in compared["architectures"] if a["status"] == "done"}
    assert done == {"baseline", f"trial-{trials[0]['trial']}"}
    assert compared["test_verdict"][str(run)]["text"].startswith("on test")

    code, out, err = run_cli("report", run, "--out", tmp_path / "report.html")
    assert code == 0, err
    page = (tmp_path / "report.html").read_text()
    assert compared["test_verdict"][str(run)]["text"] in page
    assert page.count("data:image/png") >= 4  # compare, rewards, the control's and the promoted trial's drawings

    code, out, err = run_cli("search", "--method", "random", "--proxy", proxy, "--cache", tiny_cache, "--trials", 1,
                             "--run", tmp_path / "random", "--json")
    assert code == 0, err
    assert json.loads(out)["finished"] == 1


def test_register_refuses_a_taken_name_or_space_tag(toy):
    with pytest.raises(ValueError, match="'toy' is registered twice"):
        register(toy)
    with pytest.raises(ValueError, match="space 'toy-depth' is taken"):
        register(replace(toy, name="toy-2", space=SimpleNamespace(SPACE="toy-depth")))
    assert "toy-2" not in METHODS
