"""The modules PEFT adapts are the modules the planner sized, for every family the planner reads.

Independent reference: PEFT itself (`get_peft_model`) on the transformers implementation of each
family, built from a small random config (no download). The trainer's LoRA config comes from
`ftplan.recipes.backend.peft_config`, exactly as a run builds it; the planner's answer is
`ftplan.sizing.memory.targeted_linears` / `adapter_params` on the same config.json dict.
"""

import pytest

pytestmark = [pytest.mark.train]
torch = pytest.importorskip("torch")
BASE = dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
            vocab_size=256, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
FAMILIES = {
    "llama": {}, "mistral": {}, "qwen2": {}, "qwen3": {"head_dim": 16}, "gemma": {"head_dim": 16},
    "gemma2": {"head_dim": 16}, "gemma3_text": {"head_dim": 16},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                  "shared_expert_intermediate_size": 64},
    "qwen3_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "head_dim": 16},
    "phi": {}, "phi3": {}, "falcon": {"num_kv_heads": 2, "new_decoder_architecture": True},
    "gpt_neox": {}, "gpt2": {"n_embd": 64, "n_layer": 1, "n_head": 4, "n_positions": 128},
}
# Families whose transformers implementation is remote code (trust_remote_code from the Hub): their
# module names in the planner come from the model repositories' modeling files, not checked here.
REMOTE = ("qwen", "baichuan", "chatglm")
SPECS = ("all-linear", "attention", "mlp", "q,v", "o,down")


def adapted(model) -> set[str]:
    """Paths inside decoder layer 0 that PEFT gave a LoRA: modules, or module.parameter for fused tensors."""
    out = set()
    for name, module in model.named_modules():
        if not hasattr(module, "lora_A") or ".0." not in f".{name}.":
            continue
        parts = name.split(".")
        path = ".".join(p for p in parts[parts.index("0") + 1:] if p != "base_layer")
        param = getattr(module, "parameter_name", None)
        out.add(f"{path}.{param}" if param else path)
    return out


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_peft_adapts_what_the_planner_sized(family, spec):
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from ftplan.recipes.backend import peft_config
    from ftplan.recipes.schema import parse_recipe
    from ftplan.sizing.architecture import from_config
    from ftplan.sizing.memory import adapter_params, targeted_linears
    from ftplan.sizing.setup import TrainingSetup

    config = AutoConfig.for_model(family, **{**BASE, **FAMILIES[family]})
    arch = from_config(config.to_dict(), family)
    # PEFT's ParamWrapper (fused MoE experts) refuses dropout; the dropout-free recipe is what such a run needs.
    recipe = parse_recipe({"model": "m", "data": {"path": "d.jsonl"},
                           "method": {"lora": {"rank": 2, "targets": spec, "dropout": 0.0}}})
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_config(config), peft_config(recipe, arch))
    planned = {lin.name for lin in targeted_linears(arch, spec)}
    assert adapted(model) == planned
    trainable = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)
    assert trainable == adapter_params(arch, TrainingSetup(lora_rank=2, lora_targets=spec))


def test_remote_code_families_are_named_as_their_modeling_files_name_them():
    from ftplan.sizing.catalog import resolve_model

    names = {fam: {lin.name for lin in resolve_model(model).arch.linears}
             for fam, model in (("qwen", "qwen-7b"), ("baichuan", "baichuan-inc/Baichuan2-7B-Chat"),
                                ("chatglm", "THUDM/chatglm3-6b"))}
    # Qwen-1 modeling_qwen.py: QWenAttention.c_attn/c_proj, QWenMLP.w1/w2/c_proj; Baichuan: W_pack;
    # ChatGLM3: self_attention.query_key_value/dense, mlp.dense_h_to_4h/dense_4h_to_h.
    assert names["qwen"] == {"attn.c_attn", "attn.c_proj", "mlp.w1", "mlp.w2", "mlp.c_proj"}
    assert "self_attn.W_pack" in names["baichuan"]
    assert names["chatglm"] == {"self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h",
                                "mlp.dense_4h_to_h"}
    assert set(REMOTE) == {"qwen", "baichuan", "chatglm"}
