"""Add interactions to the feature store: synthetic, MovieLens 100K, or any CSV. Idempotent.

Usage:
    python scripts/ingest.py                                          # seeded synthetic data
    python scripts/ingest.py dataset=movielens-100k dataset.path=../shared/data/ml-100k
    python scripts/ingest.py dataset=movielens-100k                   # downloads it once
    python scripts/ingest.py dataset=csv dataset.path=ratings.csv dataset.columns.user=userId \
        dataset.columns.item=movieId dataset.columns.rating=rating dataset.columns.time=timestamp
    python scripts/ingest.py db.schema=movielens db.url=postgresql://user:pw@host:5432/db
"""

import hydra
from omegaconf import DictConfig

from recmf import cli, config  # noqa: F401  (config registers the key types with Hydra)


@hydra.main(config_path="../configs", config_name="ingest", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from recmf.pipeline import ingest

    result = cli.call(ingest, cfg, "ingest")
    print(result.summary())


if __name__ == "__main__":
    cli.main(main)
