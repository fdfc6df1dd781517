"""The runtime a user deploys with: a retrained detector as ONNX, and ONNX Runtime to time it.

What the ONNX file holds: the network, image -> raw outputs (FCOS: `cls_logits` N×P×K,
`box_ltrb` N×P×4, `ctr_logits` N×P; RetinaNet: `cls_logits`, `box_deltas`), at one input size
(the promoted one: batch 1, H×W fixed, recorded). What it leaves out, as torchvision's detectors'
exports do: the post-processing (scores, top-k per level, per-class NMS), which is numpy and the
numba kernels here - `OnnxDetector` runs the file through ONNX Runtime and then exactly the
detector's own `postprocess`, so its detections are torch's. The file's metadata carries what that
needs: the pyramid's feature sizes, the classes and the thresholds.

The export is torch.export's (`dynamo=True`) at that one size, so every shape is a constant and
the ops are exported as this CPU runs them in torch (taps that only read padding trimmed, small
maps as matmuls, the deformable convolution as `grid_sample` and a matmul: torchvision's own kernel
has no ONNX export), all standard ONNX ops; its outputs equal torch's within float order (tested).
The older TorchScript exporter cannot: it traces shape arithmetic as graph values and then meets a
convolution whose kernel (trimmed by the map's size) has no static shape. An export takes ~10-30 s.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import NascliError

#: Relative tolerance the export is checked against torch at (float32 summation order).
TOLERANCE = 1e-4


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (torch.export's ONNX writer)
    except ImportError:
        raise NascliError("ONNX export and --runtime onnxruntime need onnx, onnxscript and onnxruntime: "
                          "pip install 'nascli[deploy]'") from None


class _Network(torch.nn.Module):
    """The detector's forward as a tuple of its tensor outputs (ONNX has no dicts)."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, images):
        out = self.model(images)
        return tuple(out[k] for k in self.names)


def output_names(outputs: dict) -> list[str]:
    return [k for k, v in outputs.items() if isinstance(v, torch.Tensor)]


def export_onnx(checkpoint, out, *, size=None, opset: int = 18) -> dict:
    """Writes the checkpoint's network as ONNX at `size` (H, W; default the promoted input size) and
    checks it against torch with ONNX Runtime. Returns the path, size, outputs and the largest
    difference found."""
    from .evaluate import load_detector
    from .latency_table import promoted_input

    model, ckpt = load_detector(checkpoint, "cpu")
    size = tuple(size) if size else promoted_input(ckpt["config"])
    return export_model(model, out, size, {"classes": json.dumps(ckpt["classes"]), "checkpoint": str(checkpoint)},
                        opset)


def export_model(model, out, size, metadata: dict | None = None, opset: int = 18) -> dict:
    """`export_onnx` for a detector in memory (eval mode): the file, its metadata, the check."""
    _require_onnx()
    import onnx

    example = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        # torch.export at this one input size: every shape is a constant, so the CPU paths that
        # depend on a map's size (trimmed taps, small-map matmuls) export as the ops they run
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        outputs = model(example)
        names = output_names(outputs)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(_Network(model, names), (example,), str(out), input_names=["images"],
                          output_names=names, opset_version=opset, dynamo=True, verbose=False, optimize=False)
    decoder = model.decoder
    meta = {"feature_sizes": json.dumps([list(s) for s in outputs["feature_sizes"]]), "input_size": json.dumps(list(size)),
            "outputs": json.dumps(names), "score_thresh": str(getattr(decoder, "score_thresh", "")),
            "nms_thresh": str(getattr(decoder, "nms_thresh", "")), "producer": "nascli", **(metadata or {})}
    proto = onnx.load(str(out))
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(out))
    got = OnnxDetector(out).network(example.numpy())
    diff = max(float(np.max(np.abs(got[k] - outputs[k].numpy()) / (np.abs(outputs[k].numpy()) + 1.0)))
               for k in names)
    if diff > TOLERANCE:
        raise NascliError(f"{out}: ONNX Runtime's outputs differ from torch's by {diff:.2e} (relative), "
                          f"above {TOLERANCE:g}; the file was written but should not be deployed")
    return {"onnx": str(out), "input_size": list(size), "outputs": names, "max_relative_difference": diff,
            "opset": opset, "bytes": out.stat().st_size}


class OnnxDetector:
    """An exported detector under ONNX Runtime (on as many threads as torch is set to): `network`
    gives the raw outputs, `__call__` the detections through the torch detector's post-processing."""

    def __init__(self, path, postprocess=None, threads: int | None = None):
        _require_onnx()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its constant-folding notes are not the user's to act on
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.names = json.loads(meta["outputs"])
        self.feature_sizes = [tuple(s) for s in json.loads(meta["feature_sizes"])]
        self.input_size = tuple(json.loads(meta["input_size"]))
        self.postprocess = postprocess

    def network(self, images: np.ndarray) -> dict:
        values = self.session.run(self.names, {"images": images.astype(np.float32, copy=False)})
        return dict(zip(self.names, values))

    def __call__(self, images: torch.Tensor, image_sizes) -> list[dict]:
        """Detections of a batch of one, padded to the exported size."""
        h, w = self.input_size
        padded = np.zeros((1, 3, h, w), np.float32)
        x = images.numpy()
        padded[:, :, :x.shape[2], :x.shape[3]] = x[:, :, :h, :w]
        outputs = {k: torch.from_numpy(v) for k, v in self.network(padded).items()}
        outputs["feature_sizes"] = self.feature_sizes
        return self.postprocess(outputs, image_sizes)
