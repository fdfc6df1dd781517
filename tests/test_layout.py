"""The house rules of the code base (docs/layout.md), checked on the source: a method's name
decides things in the registry only, no module reaches into another's private names, and every
registry entry keeps the contract the search, training and retraining rely on."""

import ast
from pathlib import Path

import pytest

from nascli.config import ProxySpec, load_spec, resolve_proxy
from nascli.methods import IMAGES, METHODS, lookup, method_names
from nascli.spaces import SPACES
from nascli.spaces.base import BACKBONE, DECODER

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "nascli").rglob("*.py"))


def _literals(node) -> set:
    """String constants a comparison operand holds (itself, or the items of a tuple/list/set)."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}


def method_name_comparisons(path: Path) -> list[str]:
    """Every comparison in a source file that involves a method name as a string literal."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare):
            names = set().union(*(_literals(n) for n in [node.left, *node.comparators])) & set(method_names())
            if names:
                found.append(f"{path.name}:{node.lineno} compares {sorted(names)}")
    return found


def test_no_module_branches_on_a_method_name():
    offenders = [hit for path in SOURCES for hit in method_name_comparisons(path)]
    assert not offenders, "look the method up in nascli/methods instead:\n" + "\n".join(offenders)


def test_the_scan_sees_the_branches_it_forbids(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(method, spec):\n    if method == "sp-nas":\n        return 1\n'
                   '    return spec.space in ("detnas", "x") or spec.space == "fpn-fcos"\n')
    assert method_name_comparisons(bad) == ["bad.py:2 compares ['sp-nas']", "bad.py:4 compares ['detnas']"]


def test_the_product_and_its_tests_import_no_benchmark():
    """Research lives apart: nascli/ never imports benchmarks/, and only the benchmarks' own tests
    (tests/bench/) do."""
    offenders = []
    for path in sorted([*(ROOT / "nascli").rglob("*.py"), *(ROOT / "tests").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "benchmarks" or n.startswith("benchmarks.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("folder", ["nascli", "benchmarks", "tests"])
def test_no_private_name_is_imported_across_modules(folder):
    offenders = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {private} from {node.module}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registry_entry_keeps_the_contract(name):
    m = METHODS[name]
    space = m.space
    for attr in ("SPACE", "SEARCHES", "Genotype", "from_spec", "build"):
        assert hasattr(space, attr), f"{space.__name__} lacks {attr} (spaces/base.py)"
    assert SPACES[space.SPACE] is space
    assert space.SEARCHES in (DECODER, BACKBONE)
    if space.SEARCHES == BACKBONE:  # trained on crops, built and started as a backbone
        assert m.cache == IMAGES and hasattr(space, "build_backbone") and m.backbone_state is not None
    assert m.reward in ("ap", "loss")
    spec = load_spec(ProxySpec, resolve_proxy(m.proxy))  # its default proxy ships and searches its space
    assert spec.space == space.SPACE
    assert lookup(name, spec.space) is m


def test_random_searches_a_named_space_with_its_methods_trial_and_control():
    r = lookup("random", "detnas")
    assert r.name == "random" and r.trial is METHODS["detnas"].trial and r.control is METHODS["detnas"].control
    assert r.options(None, None, 3) == {} and r.strategy.__name__ == "RandomStrategy"
    with pytest.raises(Exception, match="sp-nas"):
        lookup("random", "sp-nas")  # SP-NAS grows one network: nothing to sample uniformly
    with pytest.raises(Exception, match="unknown method"):
        lookup("darts")
