"""Identifiers are kept exactly or refused by name (issue 16 class 2), a transformer never mixes in results
computed for another input (class 3), and what the listwise reranker accepts: one check
(``checks.validate_frame``) at every input of ours that takes qids or docnos."""
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
from ir_measures import RR, nDCG

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.checks import identifier
from pyterrier_e2rank.pyserini import HitReranker
from pyterrier_e2rank.rerank.vectors import CandidateVectors

from fixtures.docs import make_docs

DOCS = pd.DataFrame({"docno": [f"d{i}" for i in range(20)], "text": make_docs(20, seed=16)})
QUERIES = pd.DataFrame({"qid": ["1", "2", "3"], "query": ["gene therapy", "virus immune response", "brain dose"]})


@pytest.fixture(scope="module")
def index_and_candidates(tiny_qwen, tmp_path_factory):
    """An index of DOCS, and its dense top 8 of each query with text."""
    built = tiny_qwen.indexer(tmp_path_factory.mktemp("ids") / "dense").index(DOCS.to_dict("records"))
    top = tiny_qwen.retriever(built, num_results=8)(QUERIES).merge(DOCS, on="docno")
    return built, top.sort_values(["qid", "rank"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def index(index_and_candidates):
    return index_and_candidates[0]


@pytest.fixture(scope="module")
def candidates(index_and_candidates):
    return index_and_candidates[1]


def with_cell(frame, column, row, value):
    values = frame[column].astype(object).tolist()
    values[row] = value
    return frame.assign(**{column: pd.Series(values, dtype=object)})


def id_consumers(model, index):
    """Every transformer of ours that takes qids or docnos, by name."""
    return {"query_encoder": model.query_encoder(), "doc_encoder": model.doc_encoder(),
            "prompt_encoder": model.prompt_encoder(num_input_docs=3), "reranker": model.reranker(num_input_docs=3),
            "reranker_index": model.reranker(num_input_docs=3, index=index), "scorer": model.scorer(),
            "scorer_index": model.scorer(index=index), "candidate_vectors": CandidateVectors(model)}


CONSUMERS = ["query_encoder", "doc_encoder", "prompt_encoder", "reranker", "reranker_index", "scorer",
             "scorer_index", "candidate_vectors"]


# ---- class 2: identifiers kept exactly or refused by name --------------------------------------------

@pytest.mark.parametrize("consumer", CONSUMERS)
def test_a_qid_none_is_refused_naming_its_row(tiny_qwen, index, candidates, consumer):
    """Was: the query encoder answered it with another query's vector (factorize gives -1), the reranker
    failed with pandas' IntCastingNaNError."""
    with pytest.raises(ValueError, match=r"^qid at row 9 is missing \(None\)$"):
        id_consumers(tiny_qwen, index)[consumer](with_cell(candidates, "qid", 9, None))


@pytest.mark.parametrize("consumer", [c for c in CONSUMERS if c != "query_encoder"])
@pytest.mark.parametrize("bad, named", [
    (None, r"docno at row 4 \(qid '1'\) is missing \(None\)"),
    (np.array(["d3"]), r"docno at row 4 \(qid '1'\) is a ndarray \(\['d3'\]\), not one identifier"),
    (["d3"], r"docno at row 4 \(qid '1'\) is a list"),
    ("d\x003", r"docno 'd\\x003' at row 4 \(qid '1'\) holds a control character \('\\x00' at character 1\)"),
])
def test_a_bad_docno_cell_is_refused_naming_row_and_qid(tiny_qwen, index, candidates, consumer, bad, named):
    """Was: a docno None shared a vector with the other None; a one-element array (pyterrier-dr's
    retrievers for a query with one hit) failed with 'unhashable type'; a NUL was accepted."""
    with pytest.raises(ValueError, match=named):
        id_consumers(tiny_qwen, index)[consumer](with_cell(candidates, "docno", 4, bad))


@pytest.mark.parametrize("bad, named", [("q\x00", "holds a control character"), ("q\x7f1", "control character"),
                                        ("q\udc801", "lone surrogate"), ("q 1", "empty or holds whitespace"),
                                        (np.array(["q1"]), "not one identifier"), (None, "missing"),
                                        (pd.NA, "missing")])
def test_identifier_refuses_what_a_run_file_cannot_keep(bad, named):
    with pytest.raises(ValueError, match=named):
        identifier(bad, "qid", "row 0")
    assert identifier("q\u00e9\u200b1", "qid", "row 0") == "q\u00e9\u200b1" and identifier(7, "qid", "row 0") == "7"


def test_a_nul_in_a_qid_never_reaches_a_run_file(tiny_qwen, index, candidates, tmp_path):
    from pyterrier_e2rank.cli.runs import write_run
    with pytest.raises(ValueError, match=r"qid 'q\\x001' at row 0 holds a control character"):
        tiny_qwen.reranker(num_input_docs=3, index=index)(with_cell(candidates, "qid", 0, "q\x001"))
    with pytest.raises(ValueError, match="control character"):
        write_run(pd.DataFrame({"qid": ["q\x001"], "docno": ["d1"], "score": [1.0], "rank": [0]}), tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("consumer", ["query_encoder", "prompt_encoder", "reranker_index", "scorer_index"])
def test_one_qid_with_two_query_texts_is_refused(tiny_qwen, index, candidates, consumer):
    """Was: both got the first text's vector (results for 'brain dose' under 'virus immune response')."""
    frame = with_cell(candidates, "query", 12, "brain dose")
    with pytest.raises(ValueError, match=r"qid '2' has 2 different 'query' values \('virus immune response', "
                                         r"'brain dose'; rows \[8, 12\]\)"):
        id_consumers(tiny_qwen, index)[consumer](frame)


@pytest.mark.parametrize("consumer", ["reranker", "reranker_index", "scorer", "scorer_index", "prompt_encoder"])
@pytest.mark.parametrize("same_text", [True, False])
def test_a_docno_twice_in_one_candidate_list_is_refused(tiny_qwen, index, candidates, consumer, same_text):
    """Was: a repeated docno filled two prompt slots and came out twice; with another text, both rows
    were scored with the first text's vector."""
    frame = with_cell(candidates, "docno", 5, candidates["docno"].iat[2])
    if same_text:
        frame = with_cell(frame, "text", 5, frame["text"].iat[2])
    docno = candidates["docno"].iat[2]
    with pytest.raises(ValueError, match=rf"qid '1' lists docno '{docno}' 2 times \(rows \[2, 5\]"):
        id_consumers(tiny_qwen, index)[consumer](frame)


def test_int_and_string_ids_of_one_value_are_refused(tiny_qwen, candidates):
    """1 and "1" are two queries in a frame but one in a run file: their candidates would merge there."""
    frame = candidates.assign(qid=pd.Series([1 if q == "1" else q for q in candidates["qid"]], dtype=object))
    frame = with_cell(frame, "qid", 0, "1")
    with pytest.raises(ValueError, match=r"qids '1' and 1 \(row 1\) are one qid in a run file but two"):
        tiny_qwen.reranker(num_input_docs=3)(frame)
    ints = candidates.assign(qid=candidates["qid"].astype(int))  # all ints: one type, kept
    assert tiny_qwen.query_encoder()(ints)["qid"].tolist() == ints["qid"].tolist()


@pytest.mark.parametrize("consumer", ["scorer", "reranker"])
def test_a_docno_with_two_texts_in_one_frame_is_refused_when_encoded_from_text(tiny_qwen, index, candidates,
                                                                               consumer):
    """Found beyond the issue: without an index the candidates are encoded once per docno, so a docno whose
    text differs between two queries was scored with its first text's vector under both."""
    shared = candidates[candidates["qid"] == "2"]["docno"].iat[0]
    frame = pd.concat([candidates, candidates[candidates["docno"] == shared].head(1).assign(
        qid="4", query="other", rank=0, text="another text of the same docno")], ignore_index=True)
    with pytest.raises(ValueError, match=rf"docno '{shared}' has 2 different 'text' values"):
        id_consumers(tiny_qwen, index)[consumer](frame)
    assert len(id_consumers(tiny_qwen, index)[consumer + "_index"](frame)) == len(frame)  # the index's vector


def test_a_lone_surrogate_in_a_query_names_the_qid(tiny_qwen, index, candidates):
    """Was: a TypeError from inside the tokenizer."""
    broken = b"caf\xe9 gene".decode("utf-8", errors="surrogateescape")
    # object dtype: pandas 3's pyarrow-backed strings cannot hold a lone surrogate at all
    frame = candidates.assign(query=pd.Series([broken if q == "2" else t for q, t in
                                               zip(candidates["qid"], candidates["query"])], dtype=object,
                                              index=candidates.index))
    with pytest.raises(ValueError, match=r"^the query of qid '2' holds a lone surrogate"):
        tiny_qwen.reranker(num_input_docs=3, index=index)(frame)


@dataclass
class Hit:
    docid: str
    score: float


def test_hit_reranker_refuses_repeated_and_missing_ids(tiny_qwen):
    """Was: a docid twice in the hits filled two prompt slots and came out twice; a qid given twice
    merged two hit lists into one; a qid None became the string 'None'."""
    reranker = HitReranker(tiny_qwen, dict(zip(DOCS["docno"], DOCS["text"])), num_input_docs=3)
    hits = [Hit(f"d{i}", 10.0 - i) for i in range(5)]
    with pytest.raises(ValueError, match=r"qid '0' lists docno 'd1' 2 times \(rows \[1, 3\]"):
        reranker.rerank("gene therapy", hits[:3] + [Hit("d1", 1.0)])
    with pytest.raises(ValueError, match=r"qid\(s\) \['7'\] given more than once"):
        reranker.rerank_batch([(7, "gene therapy", hits), ("7", "virus", hits[:2])])
    with pytest.raises(ValueError, match=r"qid at queries\[0\] is missing"):
        reranker.rerank_batch([(None, "gene therapy", hits)])
    with pytest.raises(ValueError, match=r"docid at hit 1 of qid '0' is missing"):
        reranker.rerank("gene therapy", [hits[0], Hit(None, 1.0)])
    reranked = reranker.rerank("gene therapy", hits, qid=7)
    assert sorted(h.docid for h in reranked) == [h.docid for h in hits]
    assert [h.rank for h in reranked] == [0, 1, 2, 3, 4]


# ---- what the listwise reranker accepts: runs read by PyTerrier ---------------------------------------

def test_a_run_read_by_pyterrier_is_reranked_without_glue(tiny_qwen, index, candidates, tmp_path):
    """Ranks from 1 (a TREC run file, written by us or by pt.io.write_results) are a whole list."""
    from pyterrier_e2rank.cli.runs import write_run
    reranker = tiny_qwen.reranker(num_input_docs=3, index=index)
    expected = reranker(candidates)[["qid", "docno", "score", "rank"]]
    write_run(candidates, tmp_path / "ours.run")
    pt.io.write_results(candidates.assign(rank=candidates["rank"] + 1), str(tmp_path / "pt.res"))
    text = pt.apply.generic(lambda frame: frame.merge(DOCS, on="docno"))
    for path in ("ours.run", "pt.res"):
        run = pt.io.read_results(str(tmp_path / path), topics=QUERIES)
        assert run.groupby("qid")["rank"].min().tolist() == [1, 1, 1]
        out = (text >> reranker)(run)[["qid", "docno", "score", "rank"]]
        pd.testing.assert_frame_equal(out, expected, atol=1e-6, check_dtype=False)


@pytest.mark.parametrize("ranks", [[1, 2, 4], [0, 0, 1], [2, 3, np.nan]])
def test_a_list_with_gaps_is_still_refused(tiny_qwen, index, candidates, ranks):
    frame = candidates[candidates["qid"] == "1"].head(3).assign(rank=ranks)
    with pytest.raises(ValueError, match="query '1' .*not a whole ranked list|rank of docno .* not a finite"):
        tiny_qwen.reranker(num_input_docs=3, index=index)(frame)


# ---- class 3: never mixing results computed for another input ----------------------------------------

@pytest.mark.parametrize("kind", ["Sqlite3ScorerCache", "Hdf5ScorerCache"])
def test_a_score_cache_cannot_serve_the_reranker_even_when_its_misses_are_a_top(tiny_qwen, index, candidates,
                                                                               tmp_path, kind):
    """Was: when the cache's misses still formed ranks 0..n-1, the reranker scored them alone and the
    cache mixed these scores with those of another candidate list."""
    import pyterrier_caching
    cache_class = getattr(pyterrier_caching, kind)
    pointwise = tiny_qwen.scorer(index=index)
    filled = cache_class(tmp_path / "scores", pointwise)
    if kind == "Hdf5ScorerCache":
        filled.build(DOCS.to_dict("records"))
    tail = candidates[candidates["rank"] >= 3]
    served = filled(tail)  # a pointwise scorer is what such a cache is for
    pd.testing.assert_series_equal(served["score"], pointwise(tail)["score"], check_names=False, atol=1e-6,
                                   check_index=False)
    filled.close()
    with pytest.raises(ValueError, match=f"listwise and cannot be served by {kind}"):
        cache_class(tmp_path / "scores", tiny_qwen.reranker(num_input_docs=3, index=index))(candidates)


def test_reranker_stats_count_its_own_passes_while_another_thread_reranks(tiny_qwen_dir, tmp_path):
    """Was: reranker.stats was a difference of the model's shared counter, so it counted the passes
    another thread made meanwhile. Thread A is held inside its first forward pass until thread B has
    reranked completely (a forward pre-hook: an ordering, not a timing)."""
    model = E2Rank(str(tiny_qwen_dir), batch_size=4)
    index = model.indexer(tmp_path / "dense").index(DOCS.to_dict("records"))
    frame = model.retriever(index, num_results=5)(QUERIES).merge(DOCS, on="docno")
    first, second = model.reranker(num_input_docs=3, index=index), model.reranker(num_input_docs=3, index=index)
    second_done, errors = threading.Event(), []

    def hold_first_until_second_is_done(module, args):
        if threading.current_thread().name == "first":
            assert second_done.wait(timeout=120), "the second thread never finished"

    def run(reranker, frame, done=None):
        try:
            reranker(frame)
        except BaseException as e:  # reported by the main thread
            errors.append(e)
        finally:
            if done is not None:
                done.set()

    before = model.stats  # a record: later passes make a new one
    hook = model.backbone.register_forward_pre_hook(hold_first_until_second_is_done)
    try:
        threads = [threading.Thread(target=run, args=(first, frame), name="first"),
                   threading.Thread(target=run, args=(second, frame[frame["qid"] == "1"], second_done), name="second")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        hook.remove()
    assert not errors, errors
    assert (first.stats.forward_passes, first.stats.texts) == (1, 3)  # three prompts in one batch
    assert (second.stats.forward_passes, second.stats.texts) == (1, 1)
    assert (model.stats - before).texts == 4  # the model's total counts both threads
    with model.counting() as outer:
        with model.counting() as inner:
            first(frame)
        second(frame[frame["qid"] == "1"])
    assert (inner.texts, outer.texts, first.stats.texts) == (3, 4, 6)


def test_experiment_options_hand_the_reranker_whole_lists(tiny_qwen, index, candidates):
    """pt.Experiment's own reuse (a precomputed common prefix, topics in batches) splits work by query,
    never a candidate list: the table equals the one computed without it."""
    first_stage = pt.Transformer.from_df(candidates)
    text = pt.apply.generic(lambda frame: frame.drop(columns=["text"]).merge(DOCS, on="docno"))
    systems = [first_stage >> text >> tiny_qwen.reranker(num_input_docs=3, index=index), first_stage]
    qrels = pd.DataFrame({"qid": ["1", "2", "3"], "docno": ["d1", "d2", "d3"], "label": [1, 1, 1]})
    plain = pt.Experiment(systems, QUERIES, qrels, [RR, nDCG @ 5], names=["prf", "first"])
    reused = pt.Experiment(systems, QUERIES, qrels, [RR, nDCG @ 5], names=["prf", "first"],
                           precompute_prefix=True, batch_size=1)
    pd.testing.assert_frame_equal(plain, reused)


def test_a_topics_frame_with_a_repeated_qid_is_refused_by_dense_search(tiny_qwen, index):
    """A query frame with one query on two rows would list each of its documents twice (found by a new user)."""
    topics = pd.concat([QUERIES, QUERIES.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match=r"1 qid\(s\) are on more than one row of the query frame \(\['1'\]\)"):
        tiny_qwen.retriever(index, num_results=5)(topics)
    assert tiny_qwen.retriever(index, num_results=5)(QUERIES).groupby("qid")["docno"].nunique().eq(5).all()


@pytest.mark.parametrize("consumer", ["scorer", "candidate_vectors"])
def test_encoding_from_text_without_a_text_column_names_the_column(tiny_qwen, index, candidates, consumer):
    with pytest.raises(pt.validate.InputValidationError, match="text"):
        id_consumers(tiny_qwen, index)[consumer](candidates.drop(columns=["text"]))
