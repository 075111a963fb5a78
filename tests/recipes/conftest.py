import pytest
import yaml


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A 2-layer random Llama with a tokenizer trained on the spot (no downloads)."""
    pytest.importorskip("torch")
    from ftplan.recipes.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def write_recipe(tmp_path, tiny_model):
    """write_recipe(objective=..., data=..., **overrides) -> path of a small, fast recipe."""

    def make(name="r", data=None, method=None, hyper=None, **top):
        recipe = {
            "name": name,
            "model": str(tiny_model),
            "data": {"path": str(data)} if data else None,
            "method": {"objective": "sft", "adapter": "lora", "lora": {"rank": 4}, **(method or {})},
            "hyperparameters": {"epochs": 1, "max_steps": 4, "batch_size": 2, "gradient_accumulation": 1,
                                "learning_rate": 5e-3, "max_seq_length": 96, "precision": "fp32",
                                **(hyper or {})},
            "checkpoint": {"every_steps": 2, "every_minutes": None},
            "output": {"dir": str(tmp_path / f"out-{name}")},
            **top,
        }
        if recipe["data"] is None:
            del recipe["data"]
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return path

    return make
