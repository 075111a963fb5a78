"""Recipe objective -> the matching TRL trainer and its config.

SFT (also continued pretraining and distillation, which are SFT on raw text or teacher outputs),
DPO, SimPO through CPOTrainer's `simpo` loss, ORPO (in TRL 1.16 under `trl.experimental.orpo`),
KTO and GRPO with the recipe's reward functions. One place maps the recipe's hyperparameters to
TrainingArguments so every objective gets the same schedule, checkpoints and logging.
"""

from __future__ import annotations

import os

from .rewards import load_reward
from .schema import Recipe
from .tracking import trainer_args

OPTIMIZERS = {"adamw": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit", "paged_adamw_8bit": "paged_adamw_8bit",
              "paged_adamw_32bit": "paged_adamw_32bit", "sgd": "sgd"}


def common_args(recipe: Recipe, output_dir: str, cuda: bool, has_eval: bool) -> dict:
    hp, ck = recipe.hyperparameters, recipe.checkpoint
    args = dict(
        output_dir=output_dir, num_train_epochs=hp.epochs, max_steps=hp.max_steps, learning_rate=hp.learning_rate,
        lr_scheduler_type=hp.lr_scheduler, warmup_steps=hp.warmup_ratio,  # a float < 1 is a ratio (transformers 5)
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size, gradient_accumulation_steps=hp.gradient_accumulation,
        gradient_checkpointing=hp.gradient_checkpointing, optim=OPTIMIZERS[hp.optimizer],
        weight_decay=hp.weight_decay, max_grad_norm=hp.max_grad_norm, seed=hp.seed, logging_steps=hp.logging_steps,
        save_strategy="steps" if ck.every_steps else "no", save_steps=ck.every_steps or 500,
        save_total_limit=ck.keep, use_cpu=not cuda, bf16=hp.precision == "bf16",
        fp16=hp.precision == "fp16", include_num_input_tokens_seen=True, dataloader_num_workers=0,
        eval_strategy="epoch" if has_eval else "no", disable_tqdm=True,
    )
    args.update(trainer_args(recipe))  # output.report_to: transformers' own tracker callbacks
    if recipe.method.adapter == "full" and hp.gradient_checkpointing:
        args["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return args


def build_trainer(recipe: Recipe, model, tokenizer, peft_cfg, train_ds, eval_ds, output_dir: str, cuda: bool,
                  callbacks: list, mask=None):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    m, hp = recipe.method, recipe.hyperparameters
    args = common_args(recipe, output_dir, cuda, eval_ds is not None)
    kw = dict(model=model, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
              peft_config=peft_cfg, callbacks=callbacks)
    obj = m.objective
    if obj in ("sft", "continued-pretraining", "distillation"):
        from trl import SFTConfig, SFTTrainer

        # The loss mask (recipes/loss_mask.py): prompt-completion through TRL's completion_only_loss; conversations
        # arrive tokenized with their labels, which TRL takes as they are.
        extra = {"completion_only_loss": bool(mask and mask.mode == "completion")}
        return SFTTrainer(args=SFTConfig(max_length=hp.max_seq_length, packing=hp.packing, **extra, **args), **kw)
    if obj == "dpo":
        from trl import DPOConfig, DPOTrainer

        # RPO (DPO + alpha x NLL on the chosen answer) is TRL's loss_type ["sigmoid", "sft"] with weights [1, alpha].
        rpo = {} if m.rpo_alpha is None else {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, m.rpo_alpha]}
        return DPOTrainer(args=DPOConfig(max_length=hp.max_seq_length, beta=m.beta,
                                         precompute_ref_log_probs=m.precompute_ref, **rpo, **args), **kw)
    if obj == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        return CPOTrainer(args=CPOConfig(max_length=hp.max_seq_length, loss_type="simpo", cpo_alpha=0.0,
                                         simpo_gamma=m.simpo_gamma, beta=m.beta, **args), **kw)
    if obj == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer(args=ORPOConfig(max_length=hp.max_seq_length, beta=m.beta, **args), **kw)
    if obj == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOTrainer(args=KTOConfig(max_length=hp.max_seq_length, beta=m.beta,
                                         precompute_ref_log_probs=m.precompute_ref, **args), **kw)
    if obj == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        n = m.num_generations
        # TRL needs the generation batch (per-device batch x accumulation) to hold whole groups.
        args["per_device_train_batch_size"] = max(hp.batch_size, n) // n * n
        rewards = [load_reward(spec) for spec in m.rewards]
        return GRPOTrainer(reward_funcs=rewards, args=GRPOConfig(num_generations=n,
                                                                  max_completion_length=m.max_completion_length,
                                                                  beta=m.beta, **args), **kw)
    raise ValueError(f"objective {obj} has no trainer")  # merge is handled before training
