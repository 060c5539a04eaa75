"""How the backbone runs: PyTorch (the reference), or exported to ONNX and run by OpenVINO
(``backend="openvino"``) or ONNX Runtime (``backend="onnx"``, float32 or ``quantize="int8"``) on the CPU; the
export is saved once per model identity and reused (``saved_export``)."""
import copy
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..io import ArtifactLocked, atomic_directory, file_sha256

BACKENDS = ("torch", "onnx", "openvino")
#: The quantizations each backend offers (``None``: the backend's own precision).
QUANTIZATIONS = {"torch": (None,), "onnx": (None, "int8"), "openvino": (None,)}
#: What each exporting backend needs (the export is ONNX in both); the ``[cpu]`` extra installs them.
PACKAGES = {"onnx": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}
#: OpenVINO's names of the precisions ``dtype`` may ask for.
OPENVINO_PRECISIONS = {torch.float32: "f32", torch.bfloat16: "bf16"}
#: The variable naming the directory of saved exports (default: ``$XDG_CACHE_HOME/pyterrier_e2rank``).
CACHE_VARIABLE = "E2RANK_CACHE"
MANIFEST = "export.json"
#: The smallest cosine of a document vector to its float32 PyTorch vector that the docs promise, by option.
PROMISED_COSINE = {"openvino": 0.9999, "onnx": 0.9999, "torch-bfloat16": 0.9999, "onnx-int8": 0.98}
#: Whether vectors computed as ``E2Rank.inference`` says share PyTorch's identity (the fingerprint's
#: ``inference`` is then not compared; pt_docs/guarantees.rst).
SHARES_PYTORCH_IDENTITY = {"openvino": True, "onnx": True, "openvino-bf16": False, "onnx-int8": False}


def check_backend(backend: str, quantize: Optional[str], *, device: torch.device, dtype: Optional[torch.dtype],
                  model_type: str) -> None:
    """Refuse a backend/quantization that cannot run ``model_type`` here, naming both; a missing package is
    named with its pip line (``ImportError``). ``dtype``: what the user asked for (``None``: the default)."""
    what = f"backend={backend!r}, quantize={quantize!r} (model type {model_type!r})"
    if quantize not in QUANTIZATIONS.get(backend, ()):
        offered = "; ".join(f"backend={b!r}, quantize={q!r}" for b, qs in QUANTIZATIONS.items() for q in qs)
        raise ValueError(f"{what} is not supported; offered: {offered}")
    if backend == "torch":
        return
    if device.type != "cpu":
        raise ValueError(f"{what} runs on the CPU only, not on device {str(device)!r}: pass device='cpu' "
                         f"(--device cpu), or keep backend='torch' on a GPU")
    allowed = (torch.float32,) if backend == "onnx" else tuple(OPENVINO_PRECISIONS)
    if dtype is not None and dtype not in allowed:
        raise ValueError(f"{what} computes in {' or '.join(map(str, allowed))}, not in dtype={dtype}: pass no "
                         f"dtype (its default) or one of those")
    missing = [name for name in PACKAGES[backend] if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"backend={backend!r}, quantize={quantize!r} needs the package(s) {missing}: "
                          f"pip install 'pyterrier-e2rank[cpu]'  (or: pip install {' '.join(PACKAGES[backend])})")


def inference_label(backend: str, variant: Optional[str]) -> Optional[str]:
    """How vectors are computed (``E2Rank.inference``): None for PyTorch, else ``backend`` with its ``variant`` (its
    quantization, or OpenVINO's ``openvino_precision``) unless float32: ``"onnx-int8"``, ``"openvino-bf16"``."""
    if backend == "torch":
        return None
    return backend if variant in (None, "f32") else f"{backend}-{variant}"


def backend_arguments(inference: Optional[str]) -> str:
    """The ``E2Rank`` calls and command-line options that compute vectors marked ``inference``
    (``inference_label``): every backend sharing PyTorch's identity where it does."""
    if inference is None or SHARES_PYTORCH_IDENTITY.get(inference, False):
        return ("E2Rank(..., backend='torch'), E2Rank(..., backend='openvino', dtype=torch.float32) or "
                "E2Rank(..., backend='onnx') (command lines: --backend torch, --backend openvino --dtype float32 "
                "or --backend onnx)")
    backend, _, variant = inference.partition("-")
    python, flag = (("dtype=torch.bfloat16", "--dtype bfloat16") if variant == "bf16" else
                    (f"quantize={variant!r}", f"--quantize {variant}"))
    return f"E2Rank(..., backend={backend!r}, {python}) (command lines: --backend {backend} {flag})"


def openvino_precision(dtype: Optional[torch.dtype]) -> str:
    """The precision OpenVINO computes in here: ``dtype``'s, else ``"bf16"`` where this CPU has bfloat16 arithmetic
    (AVX-512 BF16 or AMX), else ``"f32"``. Raises ValueError: bfloat16 asked of a CPU without it."""
    import openvino
    core = openvino.Core()
    native = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if dtype == torch.bfloat16 and not native:
        raise ValueError(f"backend='openvino', dtype={dtype}: this CPU ({core.get_property('CPU', 'FULL_DEVICE_NAME')})"
                         f" has no bfloat16 arithmetic (AVX-512 BF16 or AMX); pass dtype=None or torch.float32")
    return OPENVINO_PRECISIONS[dtype] if dtype is not None else ("bf16" if native else "f32")


def export_cache() -> Path:
    """The directory of saved exports: ``$E2RANK_CACHE``, else ``$XDG_CACHE_HOME/pyterrier_e2rank``."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pyterrier_e2rank"


def saved_export(backbone: torch.nn.Module, quantize: Optional[str], identity: dict):
    """``(directory, keep)``: the ONNX export of ``backbone`` under ``export_cache()/exports/<digest of identity
    but name and backend, quantize, torch version>``, reused when its manifest's files match, else exported there;
    while another process writes it, or in a read-only cache, into a private temporary directory (``keep``)."""
    key = {"identity": {k: v for k, v in identity.items() if k not in ("model", "inference")}, "quantize": quantize,
           "torch": torch.__version__}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    target = export_cache() / "exports" / digest
    if _intact(target, key):
        return target, None
    try:
        with atomic_directory(target, owned=lambda d: {p.name for p in d.iterdir()}, overwrite=True,
                              what="exported model") as staging:
            _export(backbone, quantize, staging, key, identity)
        return target, None
    except (ArtifactLocked, PermissionError):  # another writer, or a read-only cache: a private export
        keep = tempfile.TemporaryDirectory(prefix="e2rank-export-")
        _export(backbone, quantize, Path(keep.name), key, identity)
        return Path(keep.name), keep


def _export(backbone: torch.nn.Module, quantize: Optional[str], directory: Path, key: dict, identity: dict) -> None:
    """The float32 export, or its int8 quantization (of the saved float32 export), into ``directory``, the
    manifest last."""
    if quantize is None:
        export_onnx(backbone, directory)
    else:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        source, _keep = saved_export(backbone, None, identity)
        root = logging.getLogger()  # it logs there its advice to pre-process a graph: none is needed here

        def no_advice(record: logging.LogRecord) -> bool:
            return not record.getMessage().startswith("Please consider to run pre-processing before quantization")
        root.addFilter(no_advice)
        try:
            quantize_dynamic(str(source / "model.onnx"), str(directory / f"model.{quantize}.onnx"),
                             weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.removeFilter(no_advice)
    (directory / MANIFEST).write_text(_manifest(directory, key))


def _manifest(directory: Path, key: dict) -> str:
    """The manifest of an export for ``key``: its files (but the manifest), with their sizes and sha256."""
    files = {p.name: [p.stat().st_size, file_sha256(p)] for p in sorted(directory.iterdir()) if p.name != MANIFEST}
    return json.dumps({"key": key, "files": files}, default=str)


def _intact(directory: Path, key: dict) -> bool:
    """Whether ``directory`` holds a complete export for ``key``: its manifest's files, sizes and digests."""
    try:
        return (directory / MANIFEST).read_text() == _manifest(directory, key)
    except (OSError, ValueError):
        return False


class _LastHiddenState(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids, attention_mask):
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_onnx(backbone: torch.nn.Module, directory: Path) -> None:
    """Write ``directory/model.onnx``: the float32 backbone traced from a copy (opset 17), dynamic batch and length:
    ``(input_ids, attention_mask)`` -> ``hidden``."""
    example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    example[1][0, :3] = 0  # padded, so that masking is traced as computed, not as constant
    axes = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
            "hidden": {0: "batch", 1: "length"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", module=r"torch\.onnx")
        torch.onnx.export(_LastHiddenState(copy.deepcopy(backbone)).eval(), example, str(directory / "model.onnx"),
                          dynamo=False, input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                          dynamic_axes=axes, opset_version=17)


class ExportedBackbone:
    """The backbone exported to ONNX (``saved_export``) and run on the CPU by ``backend``, with as many threads as
    PyTorch uses: ``(input_ids, attention_mask)`` -> float32 ``last_hidden_state``, like the PyTorch backbone's.
    ``"onnx"``: ONNX Runtime, float32 or ``variant="int8"`` (the quantization); ``"openvino"``: OpenVINO in the
    precision ``variant`` (``openvino_precision``'s). ``precision``: ``"f32"``, ``"bf16"``, ``"int8"``, as computed."""

    def __init__(self, backend: str, backbone: torch.nn.Module, *, variant: Optional[str], identity: dict):
        quantize = variant if backend == "onnx" else None
        self.directory, self._keep = saved_export(backbone, quantize, identity)
        onnx_path = str(self.directory / ("model.onnx" if quantize is None else f"model.{quantize}.onnx"))
        if backend == "onnx":
            import onnxruntime
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            self.session = onnxruntime.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
            self.run, self.precision = lambda inputs: self.session.run(None, inputs)[0], quantize or "f32"
            return
        import openvino
        core = openvino.Core()
        config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": variant}
        self.compiled = core.compile_model(core.read_model(onnx_path), "CPU", config)
        self.run = lambda inputs: self.compiled(inputs)[0]
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.run({"input_ids": input_ids.cpu().numpy().astype(np.int64),
                           "attention_mask": attention_mask.cpu().numpy().astype(np.int64)})
        return torch.from_numpy(np.asarray(hidden, dtype=np.float32))
