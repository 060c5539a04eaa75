"""The command lines (``e2rank``, ``e2rank-train``)."""
