"""Text to vectors, once, where the change agent needs them: the embedders and the shared
Postgres embedding cache."""
