"""``e2rank study``: the paper reviewers' questions answered on any model and dataset (pt_docs/study.rst)."""
