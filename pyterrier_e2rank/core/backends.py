"""How the backbone runs: PyTorch (the reference), or an ONNX Runtime export, float32 or int8 (``E2Rank(...,
backend="onnx", quantize="int8")``), the faster choice on a CPU.

Why ONNX Runtime with dynamic int8 quantization (``onnxruntime.quantization.quantize_dynamic``: int8 weights per
output channel, uint8 activations quantized per batch), measured on SciFact documents (64 texts, 230 tokens on
average, batches of 16, one thread, 2-core AVX-512 VNNI machine shared with other jobs; ratios of docs/s to
float32 PyTorch, cosine of each vector to its float32 PyTorch vector):

================================  ===============  ==================  ==================
backend                           all-MiniLM-L6-v2  Qwen3-0.6B-shaped    cosine min / mean
                                                    (2 layers)           (MiniLM; Qwen3)
================================  ===============  ==================  ==================
torch bfloat16                    1.8x              -                   0.99992 / 0.99995
torch ``quantize_dynamic`` int8   2.7x              -                   0.972 / 0.981
onnx float32                      1.6x              1.1x                1.0000 / 1.0000
onnx int8                         3.0x              3.0x                0.987 / 0.994; 0.992 / 0.995
================================  ===============  ==================  ==================

PyTorch's own dynamic quantization (``torch.ao.quantization``) is deprecated (slated for removal in favour of
torchao) and quantizes activations to 7 bits on x86, which moved MiniLM's vectors three times as far; torchao's
int8 needs ``torch.compile`` to be fast on a CPU; OpenVINO is not installed here and would be one more runtime
to keep. So ``onnx`` is the one faster backend, and ``torch`` with ``quantize`` is refused.

An exported model computes other vectors than the PyTorch one (float32 ONNX within 1e-5, int8 within the
cosines above): ``inference_fingerprint`` adds ``inference: "onnx-int8"`` (or ``"onnx"``) to the model's
fingerprint, so an index records it, and vectors of the two are never mixed (``IndexModelMismatch``, naming
``inference`` among the differing settings). PyTorch float32 (and bfloat16) vectors keep the fingerprint they
always had.

The export (``torch.onnx.export``, TorchScript tracer, opset 17, dynamic batch and length) is made once per
model object into a temporary directory, from a copy of the backbone (tracing changed a BERT's later PyTorch
outputs); about 1 minute for a 2-layer Qwen3-0.6B-shaped model and the same again to quantize, here.
"""
import copy
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

BACKENDS = ("torch", "onnx")
QUANTIZATIONS = (None, "int8")
#: What ``backend="onnx"`` needs, and how to get it.
ONNX_PACKAGES = {"onnx": "onnx", "onnxruntime": "onnxruntime"}
PIP_LINE = "pip install 'pyterrier-e2rank[cpu]'  (or: pip install onnx onnxruntime)"


def check_backend(backend: str, quantize: Optional[str], *, device: torch.device, dtype: torch.dtype,
                  model_type: str) -> None:
    """Refuse a backend/quantization that cannot run ``model_type`` here, naming both; a missing package is
    named with its pip line (``ImportError``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported (model type {model_type!r}, quantize={quantize!r}); "
                         f"choose one of {BACKENDS}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize={quantize!r} is not supported for backend={backend!r} (model type "
                         f"{model_type!r}); choose one of {QUANTIZATIONS}")
    if backend == "torch":
        if quantize is not None:
            raise ValueError(f"quantize={quantize!r} is not supported for backend='torch' (model type "
                             f"{model_type!r}): PyTorch's dynamic int8 quantization is deprecated and less accurate; "
                             f"use backend='onnx', quantize={quantize!r}")
        return
    if device.type != "cpu" or dtype != torch.float32:
        raise ValueError(f"backend={backend!r}, quantize={quantize!r} runs on the CPU in float32 (model type "
                         f"{model_type!r}), not on {device.type!r} in {dtype}; pass device='cpu' and no dtype")
    import importlib.util
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"backend={backend!r}, quantize={quantize!r} needs the package(s) {missing}: {PIP_LINE}")


def inference_fingerprint(backend: str, quantize: Optional[str]) -> dict:
    """The fingerprint entries of how vectors are computed: none for PyTorch, ``{"inference": "onnx[-int8]"}``
    for an export (its vectors differ)."""
    if backend == "torch":
        return {}
    return {"inference": backend if quantize is None else f"{backend}-{quantize}"}


class _LastHiddenState(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids, attention_mask):
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class OnnxBackbone:
    """The backbone exported to ONNX (quantized to int8 if asked) and run by ONNX Runtime on the CPU, with as
    many threads as PyTorch uses. ``(input_ids, attention_mask)`` (``[batch, length]`` int64) ->
    ``last_hidden_state`` ``[batch, length, hidden]`` float32, like the PyTorch backbone's."""

    def __init__(self, backbone: torch.nn.Module, quantize: Optional[str]):
        import onnxruntime
        self._directory = tempfile.TemporaryDirectory(prefix="e2rank-onnx-")
        path = Path(self._directory.name) / "model.onnx"
        example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
        example[1][0, :3] = 0  # padded, so that masking is traced as computed, not as constant
        axes = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
                "hidden": {0: "batch", 1: "length"}}
        with torch.no_grad():
            torch.onnx.export(_LastHiddenState(copy.deepcopy(backbone)).eval(), example, str(path), dynamo=False,
                              input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                              dynamic_axes=axes, opset_version=17)
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic
            quantized = path.with_name("model.int8.onnx")
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, per_channel=True)
            path = quantized
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        (hidden,) = self.session.run(None, {"input_ids": input_ids.cpu().numpy().astype(np.int64),
                                            "attention_mask": attention_mask.cpu().numpy().astype(np.int64)})
        return torch.from_numpy(hidden)
