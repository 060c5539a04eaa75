"""How the backbone runs: PyTorch (the reference), or exported to ONNX and run by OpenVINO (``E2Rank(...,
backend="openvino")``, the choice on a CPU) or ONNX Runtime (``backend="onnx"``, float32 or ``quantize="int8"``).

Why OpenVINO, measured by ``benchmarks/cpu_inference.py`` (``benchmarks/results/quick-2026-11-30.json``: 128
SciFact documents, batches of 16, 2 threads on a 2-core AMD EPYC with AVX-512 BF16 and VNNI; documents/s
relative to float32 PyTorch; the smallest cosine of a vector to its float32 PyTorch vector; SciFact nDCG@10
minus float32's on all 300 test queries, MiniLM, dense over the pooled documents and ``bm25>>e2rank``):

=======================================  ==========  ===============  =================  ================
option                                   MiniLM      Qwen3-0.6B-      cosine min          nDCG@10 delta
                                                     shaped, 2 layers (MiniLM / Qwen3)   (dense, rerank)
=======================================  ==========  ===============  =================  ================
``backend="openvino"`` (bfloat16 here)   2.97x       3.92x            0.99997 / 0.99991  +0.0015, +0.0002
``backend="openvino", dtype=float32``    1.94x       2.19x            1.00000 / 1.00000
``dtype=torch.bfloat16`` (PyTorch)       2.68x       2.77x            0.99992 / 0.99991
``backend="onnx"``                       1.44x       1.64x            1.00000 / 1.00000
``backend="onnx", quantize="int8"``      2.01x       3.40x            0.99142 / 0.99161  +0.0025, -0.0037
=======================================  ==========  ===============  =================  ================

OpenVINO compiles the ONNX export for the CPU it runs on and, where the CPU computes bfloat16 natively
(AVX-512 BF16, AMX), runs matrix products in bfloat16 by default: the fastest option here, and as close to
float32 as PyTorch's own bfloat16. Where the CPU has no bfloat16 it runs float32, still 1.9-2.2x PyTorch
here, whereas PyTorch's bfloat16 without native support is emulated and slower than float32. ONNX Runtime's
dynamic int8 (int8 weights per output channel, uint8 activations scaled per batch, so a vector depends on
its batch mates) moves vectors 100-300 times as far as bfloat16 (in 1 - cosine): its nDCG@10 stays within
0.005 on the 300 queries, but on the first 30 it moved ``bm25>>e2rank`` by +0.027. Over all 5,183 SciFact documents
(batches of 16) the smallest cosines are 0.9881 / 0.9996 for int8, 0.99997 / 0.99999 for OpenVINO's bfloat16 and
0.99991 / 0.99998 for PyTorch's (MiniLM / a tiny Qwen3): what ``PROMISED_COSINE`` promises stays below. PyTorch's
``quantize_dynamic`` (deprecated for torchao, whose int8 needs ``torch.compile`` on a CPU) was less accurate
still (cosine 0.972 minimum on MiniLM) and is not offered.

An exported model computes other vectors than the PyTorch one: its fingerprint gains ``inference``
(``"openvino"``, ``"onnx"``, ``"onnx-int8"``), so an index records it and vectors of two ways of computing are
never mixed (``IndexModelMismatch``, naming ``inference``, its two values, and the arguments that compute
like the index). PyTorch float32 (and bfloat16) vectors keep the fingerprint they always had; OpenVINO's
bfloat16 and float32 likewise share ``"openvino"`` (an index built on a CPU with bfloat16 serves queries
encoded on one without it), and ``precision`` says which ran.

The export (``torch.onnx.export``) is made once per model object into a temporary directory: about 1 s for MiniLM
and 7 s for a 2-layer Qwen3-0.6B-shaped model here (quantizing that to int8 adds 9 s).
"""
import copy
import importlib.util
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

BACKENDS = ("torch", "onnx", "openvino")
#: The quantizations each backend offers (``None``: the backend's own precision).
QUANTIZATIONS = {"torch": (None,), "onnx": (None, "int8"), "openvino": (None,)}
#: What each exporting backend needs (the export is ONNX in both); the ``[cpu]`` extra installs them.
PACKAGES = {"onnx": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}
#: OpenVINO's names of the precisions ``dtype`` may ask for.
OPENVINO_PRECISIONS = {torch.float32: "f32", torch.bfloat16: "bf16"}
#: The smallest cosine of a document vector to its float32 PyTorch vector that README, docstrings and the
#: ``--backend``/``--quantize`` help promise, by option: below the minimum over all 5,183 SciFact documents
#: (batches of 16) of MiniLM and a tiny Qwen3; ``tests/test_cpu_backends.py`` measures it on SciFact documents.
PROMISED_COSINE = {"openvino": 0.9999, "torch-bfloat16": 0.9999, "onnx-int8": 0.98}


def check_backend(backend: str, quantize: Optional[str], *, device: torch.device, dtype: Optional[torch.dtype],
                  model_type: str) -> None:
    """Refuse a backend/quantization that cannot run ``model_type`` here, naming both; a missing package is
    named with its pip line (``ImportError``). ``dtype``: what the user asked for (``None``: the default)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported (model type {model_type!r}, quantize={quantize!r}); "
                         f"choose one of {BACKENDS}")
    if quantize not in QUANTIZATIONS[backend]:
        offered = [f"backend={b!r}, quantize={q!r}" for b, qs in QUANTIZATIONS.items() for q in qs if q]
        raise ValueError(f"quantize={quantize!r} is not supported for backend={backend!r} (model type "
                         f"{model_type!r}); offered: {', '.join(offered)}")
    if backend == "torch":
        return
    if device.type != "cpu":
        raise ValueError(f"backend={backend!r}, quantize={quantize!r} (model type {model_type!r}) runs on the CPU "
                         f"only, not on device {str(device)!r}: pass device='cpu' (--device cpu), or keep "
                         f"backend='torch' on a GPU")
    allowed = (torch.float32,) if backend == "onnx" else tuple(OPENVINO_PRECISIONS)
    if dtype is not None and dtype not in allowed:
        raise ValueError(f"backend={backend!r}, quantize={quantize!r} (model type {model_type!r}) computes in "
                         f"{' or '.join(map(str, allowed))}, not in dtype={dtype}: pass no dtype (its default) or "
                         f"one of those")
    missing = [name for name in PACKAGES[backend] if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"backend={backend!r}, quantize={quantize!r} needs the package(s) {missing}: "
                          f"pip install 'pyterrier-e2rank[cpu]'  (or: pip install {' '.join(PACKAGES[backend])})")


def inference_name(backend: str, quantize: Optional[str]) -> str:
    """What a fingerprint records of an exported backend: ``"onnx"``, ``"onnx-int8"``, ``"openvino"``."""
    return backend if quantize is None else f"{backend}-{quantize}"


def backend_arguments(inference: Optional[str]) -> str:
    """The ``E2Rank`` arguments that compute vectors marked ``inference`` (``inference_name``'s; None:
    PyTorch)."""
    backend, _, quantize = (inference or "torch").partition("-")
    return f"backend={backend!r}" + (f", quantize={quantize!r}" if quantize else "")


def exported_backbone(backend: str, backbone: torch.nn.Module, *, quantize: Optional[str],
                      dtype: Optional[torch.dtype]):
    """The runner of ``backbone`` for an exporting ``backend`` (checked by ``check_backend``)."""
    if backend == "onnx":
        return OnnxBackbone(backbone, quantize)
    return OpenVinoBackbone(backbone, dtype)


class _LastHiddenState(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids, attention_mask):
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_onnx(backbone: torch.nn.Module, directory: Path) -> Path:
    """``directory/model.onnx``: the float32 backbone traced (``torch.onnx.export``, TorchScript tracer, opset
    17) from a copy (tracing changed a BERT's later PyTorch outputs), with dynamic batch and length:
    ``(input_ids, attention_mask)`` -> ``hidden``."""
    path = directory / "model.onnx"
    example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    example[1][0, :3] = 0  # padded, so that masking is traced as computed, not as constant
    axes = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
            "hidden": {0: "batch", 1: "length"}}
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer's warnings on data-dependent branches and indexing: the export is checked against PyTorch
        # instead (tests/test_cpu_backends.py: lengths 3 to 1024 words, padded batches, listwise prompts)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", module=r"torch\.onnx")
        torch.onnx.export(_LastHiddenState(copy.deepcopy(backbone)).eval(), example, str(path), dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                          dynamic_axes=axes, opset_version=17)
    return path


class _Exported:
    """A backbone exported to a temporary directory (kept as long as the runner) and run outside PyTorch:
    ``(input_ids, attention_mask)`` (``[batch, length]`` int64) -> ``last_hidden_state`` ``[batch, length,
    hidden]`` float32, like the PyTorch backbone's. Subclasses set ``inference`` (what the model's fingerprint
    records: the backend and its quantization), ``precision`` (what the matrix products compute in: ``"f32"``,
    ``"bf16"``, ``"int8"``) and ``run`` (numpy inputs by name -> the hidden states)."""
    inference: str
    precision: str

    def __init__(self, backbone: torch.nn.Module):
        self._directory = tempfile.TemporaryDirectory(prefix="e2rank-export-")
        self.onnx_path = export_onnx(backbone, Path(self._directory.name))

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.run({"input_ids": input_ids.cpu().numpy().astype(np.int64),
                           "attention_mask": attention_mask.cpu().numpy().astype(np.int64)})
        return torch.from_numpy(np.asarray(hidden, dtype=np.float32))


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    """A logging filter: drops ONNX Runtime's advice to pre-process a graph before quantizing it."""
    return not record.getMessage().startswith("Please consider to run pre-processing before quantization")


class OnnxBackbone(_Exported):
    """ONNX Runtime on the CPU, float32 or dynamic int8 (``quantize_dynamic``: int8 weights per output channel,
    uint8 activations per batch), with as many threads as PyTorch uses."""

    def __init__(self, backbone: torch.nn.Module, quantize: Optional[str]):
        import onnxruntime
        super().__init__(backbone)
        path = self.onnx_path
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic
            path = path.with_name("model.int8.onnx")
            root = logging.getLogger()  # it logs there its advice to pre-process a graph: none is needed here
            root.addFilter(_no_preprocessing_advice)
            try:
                quantize_dynamic(str(self.onnx_path), str(path), weight_type=QuantType.QInt8, per_channel=True)
            finally:
                root.removeFilter(_no_preprocessing_advice)
        self.inference = inference_name("onnx", quantize)
        self.precision = quantize or "f32"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, inputs: dict) -> np.ndarray:
        return self.session.run(None, inputs)[0]


class OpenVinoBackbone(_Exported):
    """OpenVINO on the CPU, in the precision ``dtype`` asks (``None``: OpenVINO's own choice for this CPU,
    bfloat16 where it computes it natively (AVX-512 BF16, AMX), float32 elsewhere), one stream of as many
    threads as PyTorch uses. ``precision`` (``"bf16"`` or ``"f32"``) is read back from OpenVINO; the
    fingerprint records ``inference: "openvino"`` for both, as PyTorch's bfloat16 and float32 share one:
    an index built on a CPU with bfloat16 serves a query encoded on one without it."""

    def __init__(self, backbone: torch.nn.Module, dtype: Optional[torch.dtype]):
        import openvino
        core = openvino.Core()
        if dtype == torch.bfloat16 and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            cpu = core.get_property("CPU", "FULL_DEVICE_NAME")
            raise ValueError(f"backend='openvino', dtype={dtype}: this CPU ({cpu}) has no bfloat16 arithmetic "
                             f"(AVX-512 BF16 or AMX); pass dtype=None or torch.float32")
        super().__init__(backbone)
        config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
        if dtype is not None:
            config["INFERENCE_PRECISION_HINT"] = OPENVINO_PRECISIONS[dtype]
        self.compiled = core.compile_model(core.read_model(str(self.onnx_path)), "CPU", config)
        self.inference = inference_name("openvino", None)
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def run(self, inputs: dict) -> np.ndarray:
        return self.compiled(inputs)[0]
