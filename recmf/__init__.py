"""recmf: matrix-factorization recommenders from a PostgreSQL feature store, tracked in MLflow."""

__version__ = "0.1.0"
