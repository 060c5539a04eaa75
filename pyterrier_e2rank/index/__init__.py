"""The dense index: the artifact, writing it, and searching it (exact, FAISS, compressed)."""
