"""Top-K items for one or several users, excluding what they already have in the store.

Usage:
    python scripts/recommend.py user=U1
    python scripts/recommend.py user=[U1,U2] k=5 format=json
    python scripts/recommend.py user=U1 run_id=<id>      # or bundle=path/to/bundle
    python scripts/recommend.py list_users=true
"""

import hydra
from omegaconf import DictConfig

from recmf import cli, config  # noqa: F401  (config registers the key types with Hydra)


@hydra.main(config_path="../configs", config_name="recommend", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from recmf import pipeline
    from recmf.serve.answer import format_table, to_json

    if cfg.list_users:
        print("\n".join(cli.call(pipeline.list_users, cfg, "recommend")))
        return
    answer = cli.call(pipeline.recommend, cfg, "recommend")
    print(to_json(answer) if cfg.format == "json" else format_table(answer))


if __name__ == "__main__":
    cli.main(main)
