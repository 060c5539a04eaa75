"""``pisa_bm25`` against BM25 written out here: repeated query terms count (as in Pyserini and Terrier),
PISA's options are reachable, and ``verbose=False`` keeps PISA's C++ log off fds 1 and 2."""
import math
import os
import subprocess
import sys
from collections import Counter

import ir_measures
import pandas as pd
import pytest
from ir_measures import nDCG

from pyterrier_e2rank.bm25 import _quiet_fds, pisa_bm25

# Words that porter2 leaves as they are, so the formula below needs no stemmer; "the" is a Terrier stopword:
# PISA drops it from queries but indexes it, so it counts in document lengths.
DOCS = ["kiwi lemon", "lemon lemon lemon plum", "kiwi kiwi fig the the", "plum fig fig lime", "lemon",
        "pear mango the", "kiwi lemon lemon lemon lemon lime pear", "fig plum", "mango mango",
        "lime the kiwi plum pear fig", "lemon kiwi mango the the the the", "pear"]
K1, B = 0.9, 0.4
# PISA scores in float32 (a handful of roundings of relative size 6e-8 each) and returns float32: 1e-5 is
# 10x that, and far below what another formula changes (Lucene's idf, repeats counted once, stopwords left
# out of lengths: each moves some score of every query here by 7% or more).
REL = 1e-5


class TinyCorpus:
    """Just what ``pisa_bm25`` reads from a dataset to index it."""

    def get_corpus_iter(self, verbose=False):
        return [{"docno": f"d{i}", "text": text} for i, text in enumerate(DOCS)]


def formula(query: str, k1: float = K1, b: float = B, repeats: bool = True) -> dict:
    """BM25 as PISA computes it: Lucene's tf part, summed over query terms with their multiplicity, but
    PISA's idf log((N - df + 0.5) / (df + 0.5)) floored at 1e-6 (Lucene's is log(1 + ...)), and document
    lengths counting every token."""
    docs = [text.split() for text in DOCS]
    n, avgdl = len(docs), sum(map(len, docs)) / len(docs)
    terms = Counter(t for t in query.split() if t != "the")
    scores = {}
    for i, doc in enumerate(docs):
        score = 0.0
        for term, qtf in terms.items():
            if tf := doc.count(term):
                df = sum(term in d for d in docs)
                idf = max(1e-6, math.log((n - df + 0.5) / (df + 0.5)))
                score += (qtf if repeats else 1) * idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / avgdl))
        if score:
            scores[f"d{i}"] = score
    return scores


def search(bm25, query: str) -> pd.DataFrame:
    return bm25(pd.DataFrame([{"qid": "q", "query": query}]))


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    from pyterrier_pisa import tokenize
    assert [tokenize(text, "porter2") for text in DOCS] == [text.split() for text in DOCS]  # no stemming to model
    index_dir = str(tmp_path_factory.mktemp("pisa") / "tiny")
    pisa_bm25(index_dir, TinyCorpus())
    return index_dir


@pytest.mark.parametrize("query_algorithm", ["block_max_wand", "maxscore", "ranked_or"])
@pytest.mark.parametrize("query", ["kiwi lemon lemon", "plum plum plum fig the", "lime pear mango mango"])
def test_scores_and_ranking_are_the_formulas(index_dir, query, query_algorithm):
    expected = formula(query)
    ranked = sorted(expected, key=expected.get, reverse=True)
    gaps = [expected[a] - expected[b] for a, b in zip(ranked, ranked[1:])]
    assert min(gaps) > 10 * REL * expected[ranked[0]], "near-ties would make the ranking a coin toss"
    run = search(pisa_bm25(index_dir, query_algorithm=query_algorithm), query)
    assert list(run["docno"]) == ranked
    assert list(run["score"]) == pytest.approx([expected[d] for d in ranked], rel=REL)


def test_a_repeat_adds_the_terms_contribution_again(index_dir):
    bm25 = pisa_bm25(index_dir)
    once = dict(search(bm25, "kiwi lemon")[["docno", "score"]].values)
    twice = dict(search(bm25, "kiwi lemon lemon")[["docno", "score"]].values)
    lemon = formula("lemon")
    assert set(once) == set(twice)
    for docno in once:
        assert twice[docno] - once[docno] == pytest.approx(lemon.get(docno, 0.0), rel=1e-4, abs=1e-5)
    assert twice["d4"] / once["d4"] == pytest.approx(2.0, rel=REL)  # lemon only: the score doubles


def test_query_weighted_false_counts_each_term_once(index_dir):
    bm25 = pisa_bm25(index_dir, query_weighted=False)
    run = search(bm25, "kiwi lemon lemon")
    expected = formula("kiwi lemon lemon", repeats=False)
    assert dict(run[["docno", "score"]].values) == pytest.approx(expected, rel=REL)
    assert dict(search(bm25, "kiwi lemon")[["docno", "score"]].values) == pytest.approx(expected, rel=REL)


def test_k1_and_b_reach_pisa(index_dir):
    run = search(pisa_bm25(index_dir, k1=1.2, b=0.75), "kiwi lemon lemon")
    assert dict(run[["docno", "score"]].values) == pytest.approx(formula("kiwi lemon lemon", 1.2, 0.75), rel=REL)


def test_stops_none_searches_stopwords(index_dir):
    assert len(search(pisa_bm25(index_dir), "the")) == 0
    assert set(search(pisa_bm25(index_dir, stops="none"), "the")["docno"]) == {"d2", "d5", "d9", "d10"}


def test_rank_cutoff_keeps_every_option(index_dir):
    bm25 = pisa_bm25(index_dir, precompute_impact=True, query_weighted=False, query_algorithm="maxscore")
    cut = (bm25 % 2).compile()
    assert type(cut) is type(bm25) and cut.num_results == 2
    assert (cut.precompute_impact, cut.query_weighted, cut.query_algorithm) == (
        bm25.precompute_impact, bm25.query_weighted, bm25.query_algorithm)
    assert list(search(cut, "kiwi lemon")["docno"]) == list(search(bm25, "kiwi lemon")["docno"])[:2]


@pytest.mark.parametrize("option, value", [("stops", "english"), ("query_algorithm", "bm25"),
                                           ("index_encoding", "zip"), ("k1", -1.0), ("b", 1.5),
                                           ("num_results", 0), ("threads", 0)])
def test_bad_options_are_named(index_dir, option, value):
    with pytest.raises(ValueError, match=f"^{option}="):
        pisa_bm25(index_dir, **{option: value})


def test_another_stemmer_than_the_index_is_refused(index_dir):
    with pytest.raises(ValueError, match="^stemmer='krovetz': .* built with 'porter2'"):
        pisa_bm25(index_dir, stemmer="krovetz")


def test_verbose_false_prints_nothing_at_fd_level(tmp_path, capfd):
    bm25 = pisa_bm25(str(tmp_path / "quiet"), TinyCorpus(), verbose=False)
    search(bm25, "kiwi lemon")
    search(pisa_bm25(str(tmp_path / "quiet"), precompute_impact=True), "kiwi")  # new impacts are built
    assert capfd.readouterr() == ("", "")


def test_verbose_shows_our_progress_but_no_pisa_line(repo_dir, tmp_path):
    """As ``e2rank experiment`` runs it (verbose, in a terminal-like process whose ``sys.stderr`` is fd 2):
    our progress bars, none of PISA's C++ log (spdlog lines on fd 1, "Storing ...: N%" on fd 2)."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text("".join(
        f'{{"_id": "d{i}", "text": "{text}"}}\n' for i, text in enumerate(DOCS * 20)))
    code = ("import sys, types\n"  # the package without its __init__ (torch): seconds, not 15
            "sys.modules['pyterrier_e2rank'] = types.ModuleType('pyterrier_e2rank')\n"
            "sys.modules['pyterrier_e2rank'].__path__ = ['pyterrier_e2rank']\n"
            "import pandas as pd\n"
            "from pyterrier_e2rank.bm25 import pisa_bm25\n"
            "bm25 = pisa_bm25(sys.argv[1], sys.argv[2], verbose=True)\n"
            "print('found', len(bm25(pd.DataFrame([{'qid': 'q', 'query': 'kiwi lemon'}]))))\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "index"), str(folder)], cwd=repo_dir,
                          capture_output=True, text=True, check=True)
    assert done.stdout == "found 100\n"
    assert "documents: 100%" in done.stderr and "PISA bm25: 100%" in done.stderr  # our progress bars
    for pisa_line in ("[info]", "[warning]", "Storing", "Index compressed", "bmw"):
        assert pisa_line not in done.stdout + done.stderr


def test_fds_are_restored_after_an_exception(capfd):
    with pytest.raises(RuntimeError), _quiet_fds():
        os.write(1, b"hidden\n")
        raise RuntimeError
    os.write(1, b"shown\n")
    os.write(2, b"shown too\n")
    assert capfd.readouterr() == ("shown\n", "shown too\n")


def test_c_stdio_buffers_are_emptied_while_hidden(repo_dir):
    """C++ writes through C's stdout buffer, which (to a pipe or file, without PYTHONUNBUFFERED) would
    otherwise come out after the fds are restored."""
    code = ("import ctypes, os, sys, types\n"  # the package without its __init__ (torch): 1 s, not 15
            "sys.modules['pyterrier_e2rank'] = types.ModuleType('pyterrier_e2rank')\n"
            "sys.modules['pyterrier_e2rank'].__path__ = ['pyterrier_e2rank']\n"
            "from pyterrier_e2rank.bm25 import _quiet_fds\n"
            "with _quiet_fds():\n"
            "    ctypes.CDLL(None).printf(b'hidden ')\n"
            "os.write(1, b'shown')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_dir, env=env, capture_output=True, check=True)
    assert done.stdout == b"shown"


def test_scifact_ndcg(scifact, tmp_path):
    """Repeats counted (the default) against once; Pyserini's flat BM25 gets 0.679."""
    topics, qrels = scifact.get_topics(), scifact.get_qrels()
    qrels = qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    index_dir = str(tmp_path / "scifact")
    scores = {}
    for query_weighted in (True, False):
        run = pisa_bm25(index_dir, scifact, query_weighted=query_weighted)(topics)
        run = run.rename(columns={"qid": "query_id", "docno": "doc_id"})
        scores[query_weighted] = ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]
    assert scores[True] == pytest.approx(0.6759, abs=5e-4)
    assert scores[False] == pytest.approx(0.6776, abs=5e-4)
