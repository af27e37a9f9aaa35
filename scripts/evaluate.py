"""Evaluate a training run on its saved test split and log the metrics and a report to it.

Usage:
    python scripts/evaluate.py                     # the latest finished training run
    python scripts/evaluate.py run_id=<id> ks=[5,10,20]
    python scripts/evaluate.py k=10
    python scripts/evaluate.py compare=[<id1>,<id2>]   # side by side; same data digest only
"""

import hydra
from omegaconf import DictConfig

from recmf import cli, config  # noqa: F401  (config registers the key types with Hydra)


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from recmf.pipeline import compare, evaluate

    if cfg.compare:
        print(cli.call(compare, cfg, "evaluate"))
        return
    result = cli.call(evaluate, cfg, "evaluate")
    print(f"{result.header()}\n{result.table()}")


if __name__ == "__main__":
    cli.main(main)
