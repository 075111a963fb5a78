import pytest

from ftplan.sizing.architecture import from_config, from_param_count
from ftplan.sizing.catalog import catalog_entries, parse_size, resolve_model
from ftplan.sizing.errors import ConfigError, InvalidValueError, UnknownModelError

DECODERS = [e for e in catalog_entries() if e["config"].get("model_type") != "t5" and e["published_params_b"]]


@pytest.mark.parametrize("entry", DECODERS, ids=[e["id"] for e in DECODERS])
def test_total_matches_published_size(entry):
    arch = from_config(entry["config"], entry["id"])
    assert arch.total_params / 1e9 == pytest.approx(entry["published_params_b"], rel=0.02)


def test_llama2_7b_exact_breakdown():
    b = resolve_model("llama-2-7b").arch.breakdown()
    assert b == {
        "embeddings": 32000 * 4096,
        "attention": 32 * 4 * 4096 * 4096,
        "mlp": 32 * 3 * 4096 * 11008,
        "norms": 32 * 2 * 4096 + 4096,
        "lm_head": 32000 * 4096,
        "total": 6_738_415_616,
    }


def test_tied_embeddings_have_no_separate_lm_head():
    assert resolve_model("llama-3.2-1b").arch.lm_head_params == 0
    assert resolve_model("gemma-2-2b").arch.lm_head_params == 0
    assert resolve_model("llama-3.1-8b").arch.lm_head_params == 128256 * 4096


def test_qwen1_intermediate_is_twice_one_projection():
    arch = resolve_model("qwen-7b").arch
    widths = {lin.leaf: lin.out_features for lin in arch.linears}
    assert widths["w1"] == widths["w2"] == 22016 // 2
    assert widths["c_attn"] == 3 * 4096


def test_falcon_kv_heads_and_ffn():
    f40 = resolve_model("falcon-40b").arch
    assert f40.kv_heads == 8 and f40.norms_per_layer == 2
    qkv = next(lin for lin in f40.linears if lin.leaf == "query_key_value")
    assert qkv.out_features == (128 + 2 * 8) * 64
    f7 = resolve_model("falcon-7b").arch
    assert f7.kv_heads == 1 and f7.norms_per_layer == 1
    assert next(lin for lin in f7.linears if lin.leaf == "dense_h_to_4h").out_features == 4 * 4544


def test_gemma_head_dim_differs_from_hidden_over_heads():
    arch = resolve_model("gemma-7b").arch
    assert arch.head_dim == 256 and arch.heads * arch.head_dim != arch.hidden


def test_moe_counts_all_experts_but_routes_few():
    arch = resolve_model("mixtral-8x7b").arch
    assert arch.is_moe
    assert arch.active_matmul_params < 0.35 * arch.total_params  # ~13B active of 47B


def test_gemma3_counts_vision_tower_separately():
    arch = resolve_model("gemma-3-4b").arch
    assert 0.39e9 < arch.extra_params < 0.45e9


def test_encoder_decoder_is_refused_with_a_reason():
    with pytest.raises(ConfigError, match="encoder-decoder"):
        resolve_model("flan-t5-xl")


def test_unknown_family_names_the_model_type():
    with pytest.raises(ConfigError, match="mamba"):
        from_config({"model_type": "mamba", "hidden_size": 8}, "x")


def test_missing_keys_name_the_keys():
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        from_config({"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "vocab_size": 10}, "x")


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="llama-3.1-8b"):
        resolve_model("lama-3.1-8b")


@pytest.mark.parametrize("size", [1.5e9, 7e9, 70e9, 405e9])
def test_params_only_shape_is_close_to_requested(size):
    assert from_param_count(size).total_params == pytest.approx(size, rel=0.1)


@pytest.mark.parametrize("text,value", [("7B", 7e9), ("1.5b", 1.5e9), ("350M", 3.5e8), ("7e9", 7e9)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["seven", "-7B", "0", "5T"])
def test_parse_size_rejects_nonsense(bad):
    with pytest.raises(InvalidValueError):
        parse_size(bad)
