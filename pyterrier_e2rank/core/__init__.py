"""The core layer: the E2Rank model and its PyTerrier transformers, the dense index, and the file, check and
identity helpers they share. It imports nothing from the integrations (``pyterrier_e2rank.data``, ``.bm25``,
``.pyserini``), the command lines (``app``) or ``training``; the public names are re-exported by the package
(``from pyterrier_e2rank import E2Rank``)."""
