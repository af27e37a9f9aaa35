"""Train a matrix-factorization recommender on the feature store and log the run to MLflow.

Usage:
    python scripts/train.py                                 # synthetic data, default model
    python scripts/train.py latent_dim=32 k=10 loss=bpr
    python scripts/train.py experiment=ml100k dataset.path=../shared/data/ml-100k
    python scripts/train.py -m latent_dim=16,32,64          # a sweep, one MLflow run each
"""

import hydra
from omegaconf import DictConfig

from recmf import cli, config  # noqa: F401  (config registers the key types with Hydra)


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from recmf.pipeline import train

    result = cli.call(train, cfg, "train")
    if result.run_id:  # DDP ranks other than 0 have no run of their own
        print(result.summary())
    return result.best_val  # the objective of hparams_search sweeps


if __name__ == "__main__":
    cli.main(main)
