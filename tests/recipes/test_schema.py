from importlib import resources

import pytest

from ftplan.recipes.schema import RecipeError, load_recipe, parse_recipe

PRESETS = sorted(f.name for f in resources.files("ftplan.recipes").joinpath("presets").iterdir()
                 if f.name.endswith(".yaml"))


def test_twelve_presets_one_per_playbook_method():
    names = {p[:-5] for p in PRESETS}
    assert names == {"lora-sft", "qlora-sft", "dora-sft", "full-sft", "dpo", "simpo", "orpo", "kto", "grpo",
                     "continued-pretraining", "distillation", "merge"}


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_validates_and_is_commented(name):
    text = resources.files("ftplan.recipes").joinpath("presets", name).read_text()
    assert text.startswith("# ftplan recipe") and text.count("#") > 10
    recipe = parse_recipe(__import__("yaml").safe_load(text), name)
    assert recipe.name == name[:-5]


def base(**kw):
    return {"model": "m", "data": {"path": "d.jsonl"}, **kw}


@pytest.mark.parametrize("data,needles", [
    (base(method={"objective": "dpx"}), ["'method.objective' = \"dpx\"", "'dpo'", "'grpo'"]),
    (base(method={"lora": {"rnak": 8}}), ["'method.lora.rnak' is not a recipe field", "rank, alpha"]),
    (base(hyperparameters={"learning_rate": -1}), ["'hyperparameters.learning_rate' = -1", "greater than 0"]),
    (base(hyperparameters={"optimizer": "adam9"}), ["'hyperparameters.optimizer'", "'adamw_8bit'"]),
    ({"model": "m"}, ["'data' section is needed"]),
    (base(method={"objective": "grpo"}), ["needs 'rewards'"]),
    ({"model": "m", "method": {"objective": "merge"}}, ["needs a 'merge' section"]),
    (base(providers={"aws": {}}), ["unknown provider", "modal"]),
    ({"data": {"path": "x"}}, ["'model' is required"]),
    (base(method={"objective": "merge", "merge": {"adapters": ["a", "b"], "weights": [1.0]}}), ["1 weights for 2"]),
])
def test_errors_name_the_field_the_value_and_what_is_allowed(data, needles):
    with pytest.raises(RecipeError) as exc:
        parse_recipe(data, "my.yaml")
    msg = str(exc.value)
    assert msg.startswith("my.yaml: ")
    for needle in needles:
        assert needle in msg


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: m\ndata:\n  path: [unclosed\n")
    with pytest.raises(RecipeError, match=r"not valid YAML at line \d"):
        load_recipe(path)


def test_not_a_mapping_and_missing_file(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="YAML mapping"):
        load_recipe(tmp_path / "list.yaml")
    with pytest.raises(RecipeError, match="cannot be read"):
        load_recipe(tmp_path / "none.yaml")


def test_digest_ignores_order_and_comments(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("model: m\ndata: {path: d.jsonl}\nmethod: {objective: dpo, beta: 0.2}\n")
    b.write_text("# comment\nmethod:\n  beta: 0.2\n  objective: dpo\ndata:\n  path: d.jsonl\nmodel: m\n")
    assert load_recipe(a).digest() == load_recipe(b).digest()
    assert load_recipe(a).method.lora.effective_alpha == 32
