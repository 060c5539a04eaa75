"""The model: loading a checkpoint, how texts are written, pooling, backends, and the identity of its vectors."""
