"""One surface (issue 26, item 4): ``index`` is the one positional argument of every factory that takes one,
every other setting a keyword; the prompt's variant is ``prompt_variant`` everywhere. The 0.3 spellings keep
working one release, with a DeprecationWarning naming the new one."""
import json

import pandas as pd
import pytest

import pyterrier_e2rank
from pyterrier_e2rank import ListwisePrompt, feedback_influence
from pyterrier_e2rank.model.loading import read_prompt_settings
from fixtures.docs import TOPIC_DOCS, TOPIC_QUERIES
from fixtures.exports import importable_exports


@pytest.fixture(scope="module")
def index(tiny_qwen, tmp_path_factory):
    return tiny_qwen.indexer(tmp_path_factory.mktemp("surface") / "dense").index(TOPIC_DOCS.to_dict("records"))


@pytest.fixture(scope="module")
def candidates(tiny_qwen, index):
    return tiny_qwen.retriever(index, num_results=6)(TOPIC_QUERIES).merge(TOPIC_DOCS, on="docno")


def test_index_is_the_first_positional_argument_of_every_factory(tiny_qwen, index, candidates):
    assert tiny_qwen.reranker(index) == tiny_qwen.reranker(index=index)
    assert tiny_qwen.scorer(index) == tiny_qwen.scorer(index=index)
    pd.testing.assert_frame_equal(tiny_qwen.reranker(index, num_input_docs=4)(candidates),
                                  tiny_qwen.reranker(num_input_docs=4)(candidates), atol=1e-5)
    pd.testing.assert_frame_equal(feedback_influence(tiny_qwen, candidates, index, num_input_docs=3),
                                  feedback_influence(tiny_qwen, candidates, num_input_docs=3), atol=1e-5)


def test_settings_by_position_of_0_3_warn_and_mean_what_they_meant(tiny_qwen, index, candidates):
    with pytest.warns(DeprecationWarning, match="num_input_docs= by keyword"):
        assert tiny_qwen.reranker(4) == tiny_qwen.reranker(num_input_docs=4)
    with pytest.warns(DeprecationWarning, match="num_input_docs=, index= by keyword"):
        assert tiny_qwen.reranker(4, index) == tiny_qwen.reranker(index, num_input_docs=4)
    with pytest.warns(DeprecationWarning, match="num_input_docs="):
        assert tiny_qwen.prompt_encoder(4) == tiny_qwen.prompt_encoder(num_input_docs=4)
    with pytest.warns(DeprecationWarning, match="num_input_docs=, index="):
        old = feedback_influence(tiny_qwen, candidates, 3, index)
    pd.testing.assert_frame_equal(old, feedback_influence(tiny_qwen, candidates, index, num_input_docs=3))


def test_the_prompt_variant_has_one_name_and_variant_warns(tiny_qwen, tmp_path):
    assert ListwisePrompt(prompt_variant="readme").prompt_variant == "readme"
    with pytest.warns(DeprecationWarning, match="use prompt_variant"):
        assert ListwisePrompt(variant="readme") == ListwisePrompt(prompt_variant="readme")
    with pytest.warns(DeprecationWarning, match="use prompt_variant"):
        assert ListwisePrompt(prompt_variant="readme").variant == "readme"
    with pytest.warns(DeprecationWarning, match="use prompt_variant"):
        assert tiny_qwen.reranker(variant="readme") == tiny_qwen.reranker(prompt_variant="readme")
    with pytest.raises(TypeError, match="pass prompt_variant= only"):
        tiny_qwen.listwise_prompt(variant="readme", prompt_variant="eval")
    (tmp_path / "e2rank_prompt.json").write_text(json.dumps({"variant": "readme", "task": None}))  # a 0.3 checkpoint
    assert read_prompt_settings(tmp_path) == {"prompt_variant": "readme"}


def test_the_prompt_encoders_encode_of_0_3_warns_and_gives_what_vec_encoder_gives(tiny_qwen):
    prompts = pd.DataFrame({"qid": ["q1"], "query": ["a query"], "prompt": ["a listwise prompt"]})
    encoder = tiny_qwen.prompt_encoder(num_input_docs=2)
    with pytest.warns(DeprecationWarning, match=r"use E2RankPromptEncoder.vec_encoder\(prompts\)") as caught:
        old = encoder.encode(prompts)
    assert caught[0].filename == __file__
    pd.testing.assert_frame_equal(old, encoder.vec_encoder(prompts))


def test_every_name_the_package_exports_is_importable():
    exports = importable_exports()  # a missing module other than an optional extra's raises
    assert all(value is not None for value in exports.values())


def test_the_package_imports_its_names_on_first_use():
    """``import pyterrier_e2rank`` (and its light modules) loads no torch; a name is imported when first used."""
    import subprocess
    import sys
    code = ("import sys, pyterrier_e2rank, pyterrier_e2rank.io\n"
            "heavy = {'torch', 'pyterrier_dr', 'sentence_transformers'} & set(sys.modules)\n"
            "assert not heavy, heavy\nassert set(pyterrier_e2rank.__all__) <= set(dir(pyterrier_e2rank))")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchName'"):
        pyterrier_e2rank.NoSuchName
