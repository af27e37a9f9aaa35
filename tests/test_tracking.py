from omegaconf import OmegaConf

from recmf.tracking import flatten, safe_config


def test_safe_config_hides_the_database_password_and_keeps_the_rest():
    cfg = OmegaConf.create(
        {
            "db": {"url": "postgresql://bob:s3cret@db.example:5432/recs", "schema": "recmf"},
            "k": 10,
            "model": {"lr": 0.01},
        }
    )
    safe = safe_config(cfg)
    assert "s3cret" not in str(safe)
    assert safe["db"]["url"] == "postgresql://bob:***@db.example:5432/recs"
    assert flatten(safe) == {
        "db.url": safe["db"]["url"],
        "db.schema": "recmf",
        "k": 10,
        "model.lr": 0.01,
    }
