from dataclasses import dataclass, field

from recmf.settings import DbConfig
from recmf.tracking import flatten, safe_config


@dataclass
class _Model:
    lr: float = 0.01


@dataclass
class _Settings:
    db: DbConfig = field(
        default_factory=lambda: DbConfig("postgresql://bob:s3cret@db.example:5432/recs", "recmf")
    )
    k: int = 10
    model: _Model = field(default_factory=_Model)


def test_safe_config_hides_the_database_password_and_keeps_the_rest():
    cfg = _Settings()
    safe = safe_config(cfg)
    assert "s3cret" not in str(safe)
    assert safe["db"]["url"] == "postgresql://bob:***@db.example:5432/recs"
    assert flatten(safe) == {
        "db.url": safe["db"]["url"],
        "db.schema": "recmf",
        "db.data_dir": ".recmf/pgdata",
        "k": 10,
        "model.lr": 0.01,
    }
