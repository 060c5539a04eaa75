"""``e2rank export``: a model written as a sentence-transformers directory, refused over what it may not replace."""
import json

import pytest

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.cli.main import main


@pytest.mark.slow
def test_export_writes_the_query_prompt_and_keeps_the_identity(tiny_qwen_dir, tmp_path, capsys):
    output = tmp_path / "st"
    assert main(["export", "--model", str(tiny_qwen_dir), "--output", str(output), "--query-task", "Find claims"]) == 0
    assert str(output) in capsys.readouterr().out
    prompts = json.loads((output / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts == {"query": "Instruct: Find claims\nQuery:"}
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(["export", "--model", str(tiny_qwen_dir), "--output", str(output)])
    assert main(["export", "--model", str(tiny_qwen_dir), "--output", str(output), "--overwrite"]) == 0
    assert "Find claims" not in (output / "config_sentence_transformers.json").read_text()
    exported, source = (E2Rank(str(path)).fingerprint() for path in (output, tiny_qwen_dir))
    assert exported == {**source, "model": str(output)}
