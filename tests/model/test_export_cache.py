"""The exported CPU model is saved once per model identity and reused by later constructions; a damaged or
partial export is never used (issue 26, item 4)."""
import shutil

import pytest

from fixtures.writers import held_by_another_process
from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.model import backends
from pyterrier_e2rank.model.backends import MANIFEST

pytest.importorskip("onnxruntime")


def stamps(directory) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.iterdir()}


@pytest.mark.slow
def test_the_second_construction_reuses_the_export_and_a_damaged_one_is_made_again(minilm_dir, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("E2RANK_CACHE", str(tmp_path))
    first = E2Rank(str(minilm_dir), device="cpu", backend="onnx")
    saved = first.exported.directory
    assert saved.parent == tmp_path / "exports" and (saved / MANIFEST).is_file()
    before = stamps(saved)
    second = E2Rank(str(minilm_dir), device="cpu", backend="onnx")
    assert second.exported.directory == saved and stamps(saved) == before  # not exported again
    expected = first.encode_docs(["a saved export computes what the first one did"])
    assert (second.encode_docs(["a saved export computes what the first one did"]) == expected).all()
    traced = []
    monkeypatch.setattr(backends, "export_onnx", lambda *args: traced.append(args))
    other = E2Rank(str(minilm_dir), device="cpu", backend="onnx", quantize="int8")
    assert other.exported.directory != saved  # another quantization is another export,
    assert not traced and stamps(saved) == before  # quantized from the saved float32 export, not traced again
    monkeypatch.undo()
    monkeypatch.setenv("E2RANK_CACHE", str(tmp_path))
    with open(saved / "model.onnx", "r+b") as onnx_file:  # damaged: one byte changed, size kept
        onnx_file.seek(100)
        byte = onnx_file.read(1)
        onnx_file.seek(100)
        onnx_file.write(bytes([byte[0] ^ 0xFF]))
    damaged = stamps(saved)
    third = E2Rank(str(minilm_dir), device="cpu", backend="onnx")
    assert third.exported.directory == saved and stamps(saved)["model.onnx"] != damaged["model.onnx"]
    assert (third.encode_docs(["a saved export computes what the first one did"]) == expected).all()
    (saved / MANIFEST).unlink()  # partial: no manifest
    E2Rank(str(minilm_dir), device="cpu", backend="onnx")
    assert (saved / MANIFEST).is_file()


@pytest.mark.slow
def test_while_another_writer_holds_the_export_a_private_one_is_used(minilm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("E2RANK_CACHE", str(tmp_path))
    first = E2Rank(str(minilm_dir), device="cpu", backend="onnx")
    saved = first.exported.directory
    shutil.rmtree(saved)
    with held_by_another_process(saved):
        second = E2Rank(str(minilm_dir), device="cpu", backend="onnx")
    assert second.exported.directory != saved and not saved.exists()
    text = ["a private export computes what the saved one did"]
    assert (second.encode_docs(text) == first.encode_docs(text)).all()
