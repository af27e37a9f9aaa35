"""recmf: matrix-factorization recommenders from a PostgreSQL feature store, tracked in MLflow.

``recmf.fit``, ``recmf.fit_store`` and ``recmf.load`` are the Python API (:mod:`recmf.api`),
imported on first use so that ``import recmf`` stays light.
"""

__version__ = "0.1.0"
__all__ = ["fit", "fit_store", "load"]


def __getattr__(name: str):
    if name in __all__:
        from recmf import api

        return getattr(api, name)
    raise AttributeError(f"module 'recmf' has no attribute {name!r}")
