"""``E2RankMTEB``: mteb's evaluation of a local SciFact subset gives the scores and nDCG@10 of our own dense
retrieval of the same vectors; the authors' instruction rule. mteb never reaches the network here."""
import json

import ir_measures
import pytest
from fixtures.scifact_subset import write_scifact_subset

from pyterrier_e2rank import E2Rank, dataset
from pyterrier_e2rank.data import corpus_iter
from pyterrier_e2rank.model.text import dataset_query_task

mteb = pytest.importorskip("mteb")
from pyterrier_e2rank.mteb_adapter import E2RankMTEB, mteb_instruction, mteb_task  # noqa: E402

SCIFACT_TASK = dataset_query_task("beir/scifact")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No Hugging Face hub, mteb's cache in the test's folder."""
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "mteb-cache"))


@pytest.fixture(scope="module")
def subset(shared_path, tmp_path_factory):
    return write_scifact_subset(shared_path("data", "scifact"), tmp_path_factory.mktemp("scifact-30") / "scifact")


def mteb_run(model, folder, tmp_path):
    """mteb's ``(nDCG@10, {qid: {docno: score}})`` of ``model`` on the subset."""
    result = mteb.evaluate(E2RankMTEB(model), mteb_task(folder, query_task=SCIFACT_TASK),
                           cache=mteb.ResultCache(tmp_path / "mteb"), prediction_folder=tmp_path / "predictions",
                           show_progress_bar=False)
    predictions = json.loads((tmp_path / "predictions" / f"{folder.name}_predictions.json").read_text())
    return result.task_results[0].get_score(getter=lambda s: s["ndcg_at_10"]), predictions["default"]["test"]


def our_run(model, folder, tmp_path):
    """Our ``(nDCG@10, {qid: {docno: score}})``: the model's index and retriever, evaluated by ir_measures."""
    model.indexer(tmp_path / "index").index(corpus_iter(folder))
    ds = dataset(folder)
    run = model.retriever(tmp_path / "index", num_results=1000)(ds.get_topics())
    ids = {"qid": "query_id", "docno": "doc_id"}
    qrels = ds.get_qrels().rename(columns={**ids, "label": "relevance"})
    ndcg = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run.rename(columns=ids))[ir_measures.nDCG @ 10]
    return ndcg, {qid: dict(zip(group["docno"], group["score"])) for qid, group in run.groupby("qid")}


def assert_same_evaluation(theirs, ours):
    """The same scores for every (query, document) and the same nDCG@10 (mteb rounds its measures to 5 digits)."""
    (their_ndcg, their_scores), (our_ndcg, our_scores) = theirs, ours
    assert their_scores.keys() == our_scores.keys()
    for qid, scores in their_scores.items():
        assert scores.keys() == our_scores[qid].keys()
        assert [scores[d] for d in scores] == pytest.approx([our_scores[qid][d] for d in scores], abs=1e-5), qid
    assert their_ndcg == pytest.approx(our_ndcg, abs=1e-5)


@pytest.mark.slow
def test_mteb_gives_our_ndcg_with_minilm(minilm_dir, subset, tmp_path):
    model = E2Rank(str(minilm_dir), batch_size=16, cache_doc_vectors=True)  # our index reuses mteb's doc vectors
    theirs = mteb_run(model, subset, tmp_path)
    ours = our_run(model, subset, tmp_path)
    assert_same_evaluation(theirs, ours)
    assert ours[0] > 0.8  # MiniLM finds SciFact's judged documents among 60 others


@pytest.mark.slow
def test_mteb_instructs_queries_as_our_retriever_does(tiny_qwen_dir, subset, tmp_path):
    model = E2Rank(str(tiny_qwen_dir), batch_size=8, cache_doc_vectors=True)
    assert model.query_task != SCIFACT_TASK
    theirs = mteb_run(model, subset, tmp_path)  # the task's instruction, not the model's
    model.query_task = SCIFACT_TASK  # as ``e2rank experiment`` picks SciFact's
    assert_same_evaluation(theirs, our_run(model, subset, tmp_path))


def test_the_authors_instruction_rule():
    task = {name: mteb.get_task(name).metadata for name in ("SciFact", "ArguAna", "CQADupstackAndroidRetrieval",
                                                              "WikiSQLRetrieval", "STSBenchmark",
                                                              "Banking77Classification")}
    query, document = mteb.types.PromptType.query, mteb.types.PromptType.document
    assert mteb_instruction(task["SciFact"], query) == SCIFACT_TASK
    assert mteb_instruction(task["SciFact"], document) is None
    assert mteb_instruction(task["ArguAna"], document) == mteb_instruction(task["ArguAna"], query) == \
        "Given a claim, find documents that refute the claim"
    assert mteb_instruction(task["CQADupstackAndroidRetrieval"], query) == "Given a question, retrieve detailed " \
        "question descriptions from Stackexchange that are duplicates to the given question"
    assert mteb_instruction(task["CQADupstackAndroidRetrieval"], document) is None
    assert mteb_instruction(task["WikiSQLRetrieval"], query) == "Retrieval relevant passage for the given query."
    assert mteb_instruction(task["STSBenchmark"], None) == "Retrieve semantically similar text"
    assert mteb_instruction(task["Banking77Classification"], None) == \
        "Given a online banking query, find the corresponding intents"
