"""Text to vectors, once, where the change agent needs them: the embedders (ONNX Runtime at run
time, sentence-transformers as the reference), the setup-time export of the model to ONNX, and the
shared Postgres embedding cache."""
