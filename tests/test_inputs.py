"""Every file a user hands nascli, corrupted every way we can think of: each reader either accepts it
or raises one NascliError line that names the file, and leaves what is on disk as it was.

Property-based (hypothesis): each kind starts from a valid file and draws a corruption — truncated,
bytes overwritten, emptied, swapped for another kind's file, a field deleted or set to the wrong
type, NaN, infinity or a huge number, an XML element or a database row damaged.
"""

import json
import math
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nascli.errors import DataError, NascliError
from nascli.inputs import KINDS, check

ODD_VALUES = [None, "", "x", -1, 0, 10**30, 1e308, math.nan, math.inf, -math.inf, [], {}, True, [1, 2], {"a": 1}]
ODD_TEXTS = ["", "x", "nan", "inf", "1e400", "-5", "99999999999", "0", "<", "\u00e9"]
EXAMPLES = 30  # per kind: 8 kinds x 30 = 240 generated cases

VOC_XML = """<annotation><filename>a.jpg</filename><size><width>64</width><height>48</height><depth>3</depth></size>
<object><name>cell</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax>
</bndbox></object><object><name>rbc</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>
</object></annotation>"""
COCO = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.png", "width": 64, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 12], "area": 120, "iscrowd": 0},
                        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 4, 4]}],
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]}
TRAIN_SPEC = {"data": "train.json", "backbone": "resnet18", "epochs": 2, "width": 16, "lr": 0.01}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, tiny_checkpoint, tiny_cache, tiny_proxy_text):
    """One valid file per kind (the run: a folder holding run.db)."""
    from nascli.spaces import zoo
    from nascli.store import RunStore

    root = tmp_path_factory.mktemp("seeds")
    files = {"coco": root / "coco.json", "voc": root / "a.xml", "train-spec": root / "train.yaml",
             "proxy-spec": root / "proxy.yaml", "genotype": root / "genotype.json",
             "checkpoint": root / "last.pt", "cache": root / "cache.h5", "run": root / "run"}
    files["coco"].write_text(json.dumps(COCO))
    for im in COCO["images"]:
        Image.new("RGB", (im["width"], im["height"]), (90, 120, 30)).save(root / im["file_name"])
    files["voc"].write_text(VOC_XML)
    files["train-spec"].write_text(yaml.safe_dump(TRAIN_SPEC))
    files["proxy-spec"].write_text(tiny_proxy_text)
    genotype = zoo.get("zoo:nas-fcos").to_json()
    files["genotype"].write_text(genotype)
    shutil.copy(tiny_checkpoint, files["checkpoint"])
    shutil.copy(tiny_cache, files["cache"])
    store = RunStore(files["run"])
    store.set_meta(method="nas-fcos", seed=0)
    store.add_control(zoo.get("zoo:fpn-fcos").to_json())
    [trial] = store.add_pending([genotype], [3], b"state")
    store.finish(trial, "done", -1.5, {"seconds": 2.0})
    store.add_score(trial, 1, "done", -1.4, {})
    store.set_retrained("trial-1", trial, genotype, -1.5, "done", "x.pt", {"AP": 0.1})
    store.close()
    for kind, path in files.items():
        check(path, kind)  # every seed is valid to begin with
    return files


@pytest.fixture(scope="module")
def tiny_proxy_text():
    from conftest import TINY_PROXY

    return TINY_PROXY


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _json_paths(value, prefix=()):
    """Every (path, ...) into a JSON-like tree: where a field can be deleted or replaced."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _json_paths(v, (*prefix, i))


def _mutate_tree(tree, path, action, value):
    if not path:
        return value
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return tree


def _structured(data, kind: str, source: Path, target: Path):
    """A field of a json / yaml / xml / checkpoint / cache / run file deleted or given an odd value."""
    if kind in ("coco", "genotype", "train-spec", "proxy-spec"):
        tree = json.loads(source.read_text()) if kind in ("coco", "genotype") else yaml.safe_load(source.read_text())
        path = data.draw(st.sampled_from(list(_json_paths(tree))))
        tree = _mutate_tree(tree, path, data.draw(st.sampled_from(["delete", "set"])) if path else "set",
                            data.draw(st.sampled_from(ODD_VALUES)))
        if kind in ("coco", "genotype"):
            target.write_text(json.dumps(tree))
        else:
            target.write_text(yaml.safe_dump(tree) if not isinstance(tree, float) else str(tree))
    elif kind == "voc":
        import xml.etree.ElementTree as ET

        root = ET.fromstring(source.read_text())
        elements = [(parent, child) for parent in root.iter() for child in parent]
        parent, child = data.draw(st.sampled_from(elements))
        if data.draw(st.booleans()):
            parent.remove(child)
        else:
            child.text = data.draw(st.sampled_from(ODD_TEXTS))
        target.write_text(ET.tostring(root, encoding="unicode"))
    elif kind == "checkpoint":
        ckpt = torch.load(source, weights_only=True)
        section = data.draw(st.sampled_from(["top", "model_args", "config", "model"]))
        tree = ckpt if section == "top" else ckpt[section]
        key = data.draw(st.sampled_from(sorted(tree)))
        if section == "model" and data.draw(st.booleans()):
            tree[key] = torch.full_like(tree[key], math.nan) if tree[key].is_floating_point() else tree[key][:0]
        elif data.draw(st.booleans()):
            del tree[key]
        else:
            tree[key] = data.draw(st.sampled_from(ODD_VALUES))
        torch.save(ckpt, target)
    elif kind == "cache":
        import h5py

        shutil.copy(source, target)
        with h5py.File(target, "r+") as f:
            attr = data.draw(st.sampled_from(sorted(f.attrs)))
            move = data.draw(st.sampled_from(["delete-attr", "set-attr", "delete-dataset", "nan"]))
            if move == "delete-attr":
                del f.attrs[attr]
            elif move == "set-attr":
                f.attrs[attr] = data.draw(st.sampled_from(["x", "[]", "{", "nan", "-1", "99999999", "null"]))
            else:
                names = []
                f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
                name = data.draw(st.sampled_from(sorted(names)))
                kind_of = f[name].dtype.kind
                if move == "delete-dataset" or kind_of not in "fiu" or not f[name].shape or not f[name].shape[0]:
                    del f[name]  # (writing into variable-length datasets crashes h5py itself)
                else:
                    f[name][0] = math.nan if kind_of == "f" else -1
    elif kind == "run":
        shutil.copytree(source, target)
        statements = ["DROP TABLE trials", "DROP TABLE scores", "UPDATE trials SET metrics = '{bad'",
                      "UPDATE trials SET genotype = 'not json'", "UPDATE trials SET genotype = '{\"space\": \"zzz\"}'",
                      "UPDATE meta SET value = '{'", "DELETE FROM meta", "UPDATE retrained SET metrics = '[1,'",
                      "UPDATE retrained SET genotype = '{}'", "UPDATE scores SET metrics = 'nan'",
                      "DELETE FROM strategy", "UPDATE trials SET reward = NULL"]
        db = sqlite3.connect(target / "run.db")
        db.execute(data.draw(st.sampled_from(statements)))
        db.commit()
        db.close()


def _bytes(data, kind: str, source: Path, target: Path, seeds: dict):
    """The file truncated, overwritten in places, emptied, or replaced by another kind's file."""
    src, dst = (source / "run.db", target / "run.db") if kind == "run" else (source, target)
    if kind == "run":
        target.mkdir()
    raw = src.read_bytes()
    move = data.draw(st.sampled_from(["truncate", "overwrite", "empty", "foreign"]))
    if move == "truncate":
        raw = raw[:data.draw(st.integers(0, max(0, len(raw) - 1)))]
    elif move == "overwrite":
        at = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + data.draw(st.binary(min_size=1, max_size=64)) + raw[at + 64:]
    elif move == "empty":
        raw = b""
    else:
        other = data.draw(st.sampled_from([k for k in seeds if k not in (kind, "run")]))
        raw = seeds[other].read_bytes()
    dst.write_bytes(raw)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_reader_gives_one_line_naming_the_file_and_changes_nothing(kind, seeds, tmp_path_factory):
    seen = {"rejected": 0}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.data())
    def corrupted(data):
        folder = tmp_path_factory.mktemp(kind)
        target = folder / seeds[kind].name
        if data.draw(st.booleans()):
            _structured(data, kind, seeds[kind], target)
        else:
            _bytes(data, kind, seeds[kind], target, seeds)
        before = _snapshot(folder)
        try:
            check(target, kind)
        except NascliError as e:
            message = str(e)
            assert "\n" not in message, message
            assert target.name in message or str(target.parent) in message, message
            seen["rejected"] += 1
        after = _snapshot(folder)
        assert {k: v for k, v in after.items() if k in before} == before, "a reader changed a file"
        assert set(before) <= set(after), "a reader deleted a file"

    corrupted()
    assert seen["rejected"] >= EXAMPLES // 3  # the corruptions mostly do corrupt: the test bites


def test_convert_voc_with_a_malformed_xml_is_one_line_and_keeps_the_output(tmp_path, run_cli):
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    (voc / "Annotations" / "good.xml").write_text(VOC_XML)
    (voc / "Annotations" / "bad.xml").write_text("<annotation><size><width>10")  # truncated
    out = tmp_path / "instances.json"
    out.write_text('{"kept": true}')
    code, _, err = run_cli("data", "convert-voc", voc, "--out", out)
    assert code == 2
    assert err.strip().count("\n") == 0 and "bad.xml: malformed XML" in err
    assert out.read_text() == '{"kept": true}'


def test_check_command_reads_each_kind_and_rejects_in_one_line(seeds, tmp_path, run_cli):
    for kind, path in seeds.items():
        code, out, _ = run_cli("check", path)  # the kind is told from the name and the fields
        assert code == 0 and f"ok ({kind};" in out, (kind, out)
    bad = tmp_path / "train.json"
    bad.write_text(json.dumps({**COCO, "images": [{"id": 1, "file_name": "a.png", "width": math.nan, "height": 4}]}))
    code, _, err = run_cli("check", bad)
    assert code == 2 and err.strip().count("\n") == 0 and "images[0].width" in err
    code, _, err = run_cli("check", bad, "--kind", "weights")
    assert code == 2 and "unknown file kind 'weights'" in err


def test_corrupted_photos_are_found_by_check_as_the_commands_meet_them(seeds, tmp_path_factory):
    """An image file truncated, overwritten, emptied or swapped for another kind's file: `check`
    calls it unusable exactly when reading it the commands' way raises one DataError line naming it,
    and a usable one reads at its declared size."""
    from nascli.data.coco import CocoDetection

    seen = {"refused": 0}
    photo = seeds["coco"].parent / COCO["images"][0]["file_name"]

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.data())
    def corrupted(data):
        folder = tmp_path_factory.mktemp("photo")
        shutil.copy(seeds["coco"], folder / "coco.json")
        shutil.copy(photo.with_name(COCO["images"][1]["file_name"]), folder)
        target = folder / photo.name
        _bytes(data, "photo", photo, target, {k: v for k, v in seeds.items() if k != "run"})
        report = check(folder / "coco.json")
        unusable = {f["image_id"] for f in report["findings"] if f["error"]}
        dataset = CocoDetection(folder / "coco.json")
        for image_id in dataset.image_ids:
            try:
                image = dataset.load_image(image_id)
            except DataError as e:
                assert image_id in unusable and "\n" not in str(e) and photo.name in str(e), str(e)
                seen["refused"] += 1
            else:
                assert image_id not in unusable
                record = dataset.coco.imgs[image_id]
                assert image.size == (record["width"], record["height"]) and image.mode == "RGB"

    corrupted()
    assert seen["refused"] >= EXAMPLES // 3
