"""The command line: thin commands, --json output, and one-line user errors with exit code 2."""

import json
import subprocess
import sys

from nascli.evaluate import evaluate


def test_help_does_not_import_torch():
    code = "import sys; from nascli.cli import app; assert 'torch' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


def test_every_command_has_help_with_an_example(run_cli):
    for cmd in (["train"], ["eval"], ["predict"], ["data", "synth"], ["data", "convert-voc"],
                ["data", "split"], ["data", "stats"]):
        code, out, _ = run_cli(*cmd, "--help")
        assert code == 0 and "Example" in out, cmd


def test_data_pipeline_through_the_cli(run_cli, tmp_path):
    code, out, _ = run_cli("data", "synth", "--out", tmp_path / "s", "--images", 6, "--size", 48, "--json")
    assert code == 0
    instances = json.loads(out)["instances"]
    code, out, _ = run_cli("data", "split", instances, "--train", tmp_path / "t.json",
                           "--val", tmp_path / "v.json", "--val-size", 2, "--json")
    assert code == 0 and json.loads(out)["val_images"] == 2
    code, out, _ = run_cli("data", "stats", tmp_path / "t.json", "--json")
    assert code == 0 and json.loads(out)["images"] == 4


def test_train_eval_cli(run_cli, tiny_coco, tmp_path):
    code, out, _ = run_cli("train", "--data", tiny_coco[0], "--out", tmp_path, "--epochs", 1, "--width", 16,
                           "--min-size", 64, "--device", "cpu", "--json")
    assert code == 0 and json.loads(out)["epochs"] == 1
    code, out, _ = run_cli("eval", tmp_path / "last.pt", "--data", tiny_coco[1], "--device", "cpu", "--json")
    shown = json.loads(out)
    direct = evaluate(tmp_path / "last.pt", tiny_coco[1], device="cpu")  # the library call the CLI wraps
    assert code == 0 and shown["images"] == 4 and shown["data"] == str(tiny_coco[1])
    for k in ("AP", "AP50", "AP75", "params", "flops"):
        assert shown[k] == direct[k], k


def _assert_user_error(result, *fragments):
    code, out, err = result
    assert code == 2, (code, out, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert str(f) in lines[0], (f, lines[0])


def test_missing_file(run_cli, tmp_path):
    _assert_user_error(run_cli("data", "stats", tmp_path / "nope.json"), "nope.json", "not found")


def test_malformed_json(run_cli, tmp_path):
    (tmp_path / "bad.json").write_text("{oops")
    _assert_user_error(run_cli("data", "stats", tmp_path / "bad.json"), "bad.json", "malformed JSON")


def test_unknown_class_id(run_cli, tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"image_id": 1, "category_id": 7, "bbox": [0, 0, 2, 2]}]}))
    _assert_user_error(run_cli("data", "stats", tmp_path / "d.json"), "d.json", "annotations[0].category_id")


def test_empty_split(run_cli, tiny_coco, tmp_path):
    _assert_user_error(run_cli("data", "split", tiny_coco[0], "--train", tmp_path / "a.json",
                               "--val", tmp_path / "b.json", "--val-size", 0), "empty split", "train.json")


def test_malformed_and_invalid_yaml(run_cli, tiny_coco, tmp_path):
    (tmp_path / "bad.yaml").write_text("epochs: [1,\n")
    _assert_user_error(run_cli("train", "--config", tmp_path / "bad.yaml"), "bad.yaml", "malformed YAML")
    (tmp_path / "neg.yaml").write_text(f"data: {tiny_coco[0]}\nepochs: -3\n")
    _assert_user_error(run_cli("train", "--config", tmp_path / "neg.yaml"), "neg.yaml", "field 'epochs'")
    (tmp_path / "typo.yaml").write_text(f"data: {tiny_coco[0]}\nepoch: 3\n")
    _assert_user_error(run_cli("train", "--config", tmp_path / "typo.yaml"), "typo.yaml", "field 'epoch'")


def test_unknown_backbone(run_cli, tiny_coco, tmp_path):
    _assert_user_error(run_cli("train", "--data", tiny_coco[0], "--backbone", "vgg16", "--out", tmp_path),
                       "field 'backbone'", "resnet18")


def test_foreign_checkpoint_and_missing_images(run_cli, tiny_coco, tmp_path):
    (tmp_path / "x.pt").write_bytes(b"\x00" * 64)
    _assert_user_error(run_cli("eval", tmp_path / "x.pt", "--data", tiny_coco[1]), "x.pt", "not a readable checkpoint")
    _assert_user_error(run_cli("predict", tmp_path / "x.pt", "nope.png"), "x.pt")


def test_cuda_requested_without_one(run_cli, tiny_coco, tmp_path):
    import torch
    if torch.cuda.is_available():
        return
    _assert_user_error(run_cli("train", "--data", tiny_coco[0], "--device", "cuda", "--out", tmp_path),
                       "--device cuda")


def test_train_stops_at_start_on_a_missing_image(run_cli, tiny_coco, tmp_path):
    data = json.loads(tiny_coco[0].read_text())
    data["images"][-1]["file_name"] = "elsewhere.png"
    (tmp_path / "moved.json").write_text(json.dumps(data))
    _assert_user_error(run_cli("train", "--data", tmp_path / "moved.json", "--out", tmp_path / "run",
                               "--epochs", 1, "--min-size", 64, "--width", 8, "--device", "cpu"),
                       "moved.json", f"images[id={data['images'][-1]['id']}].file_name", "elsewhere.png")
    assert not (tmp_path / "run").exists()


def test_search_with_a_bad_spec_or_cache_creates_no_run(run_cli, tiny_cache, tmp_path):
    (tmp_path / "typo.yaml").write_text("space: nas-fcos\nwidht: 8\n")
    _assert_user_error(run_cli("search", "--proxy", tmp_path / "typo.yaml", "--cache", tiny_cache,
                               "--trials", 1, "--run", tmp_path / "a"), "typo.yaml", "field 'widht'")
    _assert_user_error(run_cli("search", "--cache", tmp_path / "nope.h5", "--trials", 1, "--run", tmp_path / "b"),
                       "nope.h5", "not found")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_help_keeps_square_brackets(run_cli):
    code, out, _ = run_cli("search", "--help")
    assert code == 0 and "nascli[ray]" in out.replace("\n", "").replace("│", "").replace(" ", "")


def test_runs_show_of_a_run_that_never_started(run_cli, tmp_path):
    """A run database created by a search killed before its first write shows as empty, not a crash."""
    from nascli.store import RunStore

    RunStore(tmp_path / "run").close()
    code, out, err = run_cli("runs", "show", tmp_path / "run")
    assert code == 0 and "no search started" in " ".join(out.split()), (out, err)
