"""The plan search: every GPU type x count x provider that fits, priced, ranked, with the Pareto front.

Pure arithmetic over the memory and speed models and the price rows: no I/O, so a full search
for one job takes milliseconds (bench/plan_speed.py). For each (GPU, count) the cheapest way to
fit is taken: LoRA before QLoRA (the method's adapter candidates in order), DDP before FSDP.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from importlib import resources

from . import constants as C
from .architecture import Architecture
from .gpus import GPU, get_gpu
from .method import REFERENCE_FORWARD, MethodChoice
from .prices import GpuPrice, PriceBook, parse_date
from .prices import today as clock
from .setup import TrainingSetup
from .setupsearch import SetupSearch
from .throughput import flops_per_token

GIB = 2**30
NODE_SIZES = (16, 32, 64, 128)  # multi-node counts tried where a provider allows several 8-GPU nodes
# Reading 16-bit safetensors from local disk onto the GPU: about 2 GB/s [U: NVMe-backed instance disk;
# providers publish no figure].
LOAD_GB_PER_S = 2.0


@dataclass(frozen=True)
class Workload:
    """What one training job asks of the hardware, from the data analysis and the method."""

    tokens_per_epoch: int  # tokens the GPUs compute on per epoch (padded or packed)
    billable_tokens_per_epoch: int  # real tokens after truncation (what per-token APIs bill)
    epochs: int
    objective: str
    mean_sequence: int  # tokens per sequence the GPU sees on average (sets the speed)
    prompts: int = 0  # GRPO: prompts per epoch
    group_size: int = 8  # GRPO: completions per prompt
    completion_len: int = 256  # GRPO: generated tokens per completion
    precomputed_reference: bool = False  # DPO/KTO: reference log-probs computed once before training
    teacher_params: int = 0  # distillation with on-the-fly teacher logits: the teacher's forward per token
    # What the setup search needs from the data (sizing/setupsearch.py):
    padded_by_batch: dict[int, int] = field(default_factory=dict)  # tokens per epoch padded at b sequences/batch
    sequences: int = 0  # sequences per epoch
    seq_len: int = 2048  # the configured maximum (what packing fills)
    longest: int = 0  # the data's longest sequence, capped at seq_len (what unpacked memory is sized for)
    mean_length: float = 0.0  # real tokens per sequence

    @property
    def total_tokens(self) -> int:
        return self.tokens_per_epoch * self.epochs


@dataclass
class Plan:
    kind: str  # cloud | local | api
    provider: str
    label: str
    gpu: str | None
    count: int
    adapter: str
    distributed: str
    per_gpu_bytes: int | None
    gpu_memory_bytes: int | None
    tokens_per_second: float | None
    train_seconds: float | None
    startup_seconds: float
    usd: float
    usd_per_hour: float | None
    source: str
    as_of: str
    notes: list[str] = field(default_factory=list)
    setup: dict | None = None  # the training setup the run uses (setupsearch.Choice.to_dict)
    startup_billed_seconds: float | None = None  # of startup_seconds, billed at the GPU rate
    mfu: float | None = None  # achieved: model FLOPs per second over the GPUs' dense peak
    training_setup: TrainingSetup | None = field(default=None, repr=False)  # what memory and speed were sized for

    @property
    def billed_hours(self) -> float | None:
        """Hours the provider bills at the GPU rate (Modal's weight download runs on a CPU container)."""
        if self.train_seconds is None:
            return None
        start = self.startup_seconds if self.startup_billed_seconds is None else self.startup_billed_seconds
        return (self.train_seconds + start) / 3600

    @property
    def hours(self) -> float | None:
        if self.train_seconds is None:
            return None
        return (self.train_seconds + self.startup_seconds) / 3600

    @property
    def nodes(self) -> int:
        return max(1, math.ceil(self.count / 8))

    def to_dict(self) -> dict:
        return {
            "kind": self.kind, "provider": self.provider, "label": self.label, "gpu": self.gpu, "count": self.count,
            "nodes": self.nodes if self.gpu else None, "adapter": self.adapter, "distributed": self.distributed,
            "per_gpu_bytes": self.per_gpu_bytes, "gpu_memory_bytes": self.gpu_memory_bytes,
            "tokens_per_second": None if self.tokens_per_second is None else round(self.tokens_per_second, 1),
            "train_seconds": None if self.train_seconds is None else round(self.train_seconds, 1),
            "startup_seconds": self.startup_seconds,
            "hours": None if self.hours is None else round(self.hours, 3),
            "usd": round(self.usd, 2),
            "usd_per_hour": None if self.usd_per_hour is None else round(self.usd_per_hour, 4),
            "source": self.source, "as_of": self.as_of, "notes": list(self.notes),
            "setup": self.setup, "mfu": None if self.mfu is None else round(self.mfu, 3),
        }


@dataclass(frozen=True)
class LocalBox:
    gpu: GPU
    count: int
    electricity_usd_per_kwh: float
    power_fraction: float
    card_price_usd: float | None = None
    lifetime_hours: float = 13140
    detected: bool = False
    unsloth: bool = False  # the gpu extra (Unsloth) is installed here: the program uses it on one GPU

    @property
    def usd_per_hour(self) -> float:
        power = self.count * self.gpu.power_w * self.power_fraction / 1000 * self.electricity_usd_per_kwh
        return power + self.amortisation_per_hour

    @property
    def amortisation_per_hour(self) -> float:
        return self.count * self.card_price_usd / self.lifetime_hours if self.card_price_usd else 0.0


def _extra_memory(arch: Architecture, setup: TrainingSetup, work: Workload) -> dict[str, int]:
    """Memory the objective adds on top of a plain training step."""
    extra: dict[str, int] = {}
    shards = setup.gpus if setup.effective_distributed in ("fsdp", "zero3") else 1
    if work.objective in REFERENCE_FORWARD and setup.adapter == "full":
        extra["reference_model"] = int(arch.total_params * 2 / shards)  # frozen 16-bit copy
    if work.teacher_params:
        extra["teacher_model"] = int(work.teacher_params * 2 / shards)  # frozen 16-bit teacher
    if work.objective == "grpo":
        kv = 2 * arch.layers * arch.kv_heads * arch.head_dim * 2  # K and V, 16-bit, per token
        extra["generation_kv_cache"] = int(kv * C.DECODE_BATCH_PER_GPU * (setup.seq_len + work.completion_len))
    return extra


def _generation_seconds(arch: Architecture, setup: TrainingSetup, gpu: GPU, work: Workload) -> float:
    """GRPO decode time: each step streams the (local share of the) weights once for a batch of sequences."""
    if work.objective != "grpo":
        return 0.0
    weight_bytes = arch.total_params * (0.55 if setup.adapter == "qlora" else 2)
    step = weight_bytes / (gpu.bandwidth_gbs * 1e9 * C.DECODE_BANDWIDTH_EFFICIENCY)
    sequences = work.prompts * work.group_size * work.epochs
    steps = math.ceil(sequences / (C.DECODE_BATCH_PER_GPU * setup.gpus)) * work.completion_len
    return steps * step


def _objective_seconds(arch: Architecture, work: Workload):
    """Seconds the objective adds to plain training: reference forwards, a teacher, generation."""
    def add(setup: TrainingSetup, gpu: GPU, secs: float, speed) -> float:
        if work.objective in REFERENCE_FORWARD:  # frozen reference model's forward of every sequence
            parts = flops_per_token(arch, setup)
            ref = parts["forward"] / sum(parts.values())
            # precompute_ref_log_probs: one pass over the data up front instead of one per step
            secs *= 1 + (ref / work.epochs if work.precomputed_reference else ref)
        if work.teacher_params:  # teacher forward (2 FLOPs per parameter per token) at the same achieved MFU
            secs += work.total_tokens * 2 * work.teacher_params / (gpu.bf16_tflops * 1e12 * speed.mfu * setup.gpus)
        return secs + _generation_seconds(arch, setup, gpu, work)
    return add


def startup_seconds(prov: dict, arch: Architecture) -> tuple[float, float, str]:
    """(wall seconds before the first step, of which billed at the GPU rate, how) for this model's size.

    Start-up is the provider's boot (queue, image, environment) plus downloading the weights at the
    provider's bandwidth and loading them onto the GPU. On Modal ftplan downloads on a CPU container
    before the GPU one starts (providers/modal_app.py), so the download is not billed at the GPU rate.
    """
    weight_gb = arch.total_params * 2 / 1e9  # 16-bit safetensors, what the Hub serves (QLoRA quantises on load)
    boot = float(prov.get("boot_seconds", 300))
    rate = float(prov.get("download_mb_per_s", 100))
    download = weight_gb * 1000 / rate
    load = weight_gb / LOAD_GB_PER_S
    wall = boot + download + load
    billed = wall - download if prov.get("download_off_gpu") else wall
    how = (f"{boot:.0f} s boot + {weight_gb:,.0f} GB of weights at {rate:g} MB/s ({download:,.0f} s) + "
           f"load {load:,.0f} s" + (" (download on a CPU container, not billed at the GPU rate)"
                                    if prov.get("download_off_gpu") else ""))
    return wall, billed, how


def modal_usd_per_hour(gpu_usd_per_hour: float, modal: dict, gpus: int, region: str = "none") -> float:
    """What Modal bills an hour for `gpus` GPUs with the CPU and memory ftplan requests beside each one.

    Modal bills max(request, usage) for CPU and memory, so the request is what is priced; the
    region multiplier applies to the whole bill (modal.com/docs/guide/region-selection).
    """
    per_gpu = (gpu_usd_per_hour + modal["cpu_usd_per_core_hour"] * modal["cpu_cores_per_gpu"]
               + modal["memory_usd_per_gib_hour"] * modal["memory_gib_per_gpu"])
    return gpus * per_gpu * modal["region_multipliers"].get(region, 1.0)


def _counts(row: GpuPrice, allowed: set[int] | None) -> list[int]:
    counts = list(row.counts)
    if row.max_nodes > 1 and 8 in row.counts:
        counts += [n for n in NODE_SIZES if n <= 8 * row.max_nodes]
    return [c for c in counts if allowed is None or c in allowed]


def search(
    arch: Architecture,
    work: Workload,
    method: MethodChoice,
    base: TrainingSetup,
    book: PriceBook,
    *,
    gpus: set[str] | None = None,
    counts: set[int] | None = None,
    providers: set[str] | None = None,
    local: LocalBox | None = None,
    region: str = "none",
    today: date | None = None,
    speed_corrections: dict[str, tuple[float, int]] | None = None,
    pinned: frozenset[str] = frozenset(),
    packing: bool | None = None,
    model_id: str | None = None,
) -> tuple[list[Plan], list[str]]:
    """All plans that fit with margin, cheapest first, each with the setup it runs, and notes on what was left out."""
    def finder(unsloth: bool) -> SetupSearch:
        return SetupSearch(arch, base, work, pinned=pinned, packing=packing, unsloth_available=unsloth,
                           speed_corrections=speed_corrections,
                           extras=lambda setup: sum(_extra_memory(arch, setup, work).values()),
                           extra_seconds=_objective_seconds(arch, work))

    cloud = finder(True)  # ftplan's images install Unsloth for one-GPU LoRA (providers/modal_app.py)
    plans: list[Plan] = []
    notes: list[str] = []
    for name, (factor, runs) in sorted((speed_corrections or {}).items()):
        notes.append(f"Speed on {name} scaled by {factor:.2f} from your {runs} measured run(s) (job store).")
    for row in book.gpu_rows:
        if (providers and row.provider not in providers) or (gpus and row.gpu not in gpus):
            continue
        card = get_gpu(row.gpu)
        prov = book.providers.get(row.provider, {})
        for count in _counts(row, counts):
            choice = cloud.best(card, count, method.adapters)
            if choice is None:
                continue
            per_hour = row.usd_per_gpu_hour * count
            plan_notes = [choice.describe()]
            if row.provider == "modal":
                per_hour = modal_usd_per_hour(row.usd_per_gpu_hour, prov, count, region)
                plan_notes.append(f"GPU {row.native_name or row.gpu}:{count} + {prov['cpu_cores_per_gpu']} cores and "
                                  f"{prov['memory_gib_per_gpu']} GiB per GPU" +
                                  (f", region x{prov['region_multipliers'][region]}" if region != "none" else ""))
            if count > 8:
                plan_notes.append(f"{count // 8} nodes x 8 GPUs: collectives across nodes at "
                                  f"{C.INTER_NODE_GBS_PER_GPU:g} GB/s per GPU (assumed)")
            wall, billed, how = startup_seconds(prov, arch)
            plan_notes.append(f"start-up {how}")
            plans.append(_priced(Plan("cloud", row.provider, prov.get("label", row.provider), row.gpu, count,
                                      choice.setup.adapter, choice.setup.effective_distributed, choice.need,
                                      card.memory_bytes, choice.tokens_per_second, choice.train_seconds, wall, 0.0,
                                      per_hour, row.source, row.as_of, plan_notes, choice.to_dict(), billed,
                                      choice.speed.mfu, choice.setup)))
    if local is not None:
        choice = finder(local.unsloth).best(local.gpu, local.count, method.adapters)
        if choice is None:
            notes.append(f"Your {local.count} x {local.gpu.name} cannot hold this job with margin with "
                         f"{'/'.join(method.adapters)} (see the cloud plans, or try a shorter --seq-len).")
        else:
            how = "detected with nvidia-smi" if local.detected else "from --local"
            cost = f"{local.gpu.power_w:g} W x {local.power_fraction:g} x ${local.electricity_usd_per_kwh:g}/kWh"
            if local.card_price_usd:
                cost += f" + ${local.card_price_usd:,.0f}/card over {local.lifetime_hours:,.0f} h"
            wall, billed, start_how = startup_seconds(book.local, arch)
            plans.append(_priced(Plan("local", "local", f"Local {local.count} x {local.gpu.name}", local.gpu.name,
                                      local.count, choice.setup.adapter, choice.setup.effective_distributed,
                                      choice.need, local.gpu.memory_bytes, choice.tokens_per_second,
                                      choice.train_seconds, wall, 0.0, local.usd_per_hour, f"{how}; {cost}",
                                      str(today or clock()), [choice.describe(), f"start-up {start_how}"],
                                      choice.to_dict(), billed, choice.speed.mfu, choice.setup)))
    plans += api_plans(arch, work, method, book, providers, today, notes, model_id=model_id)
    plans.sort(key=lambda p: (p.usd, p.hours if p.hours is not None else math.inf))
    return plans, notes


def _priced(plan: Plan) -> Plan:
    plan.usd = (plan.usd_per_hour or 0.0) * (plan.billed_hours or 0.0)
    return plan


def _together_band(params: int, bands: list[dict]) -> dict | None:
    size_b = params / 1e9
    for band in bands:
        if size_b <= band["max_params_b"] + 0.5:
            return band
    return None


def openai_plans(work: Workload, book: PriceBook, today: date | None, notes: list[str]) -> list[Plan]:
    """OpenAI's own models at their per-token rate: alternatives to the open model, never after the cutoff."""
    oa = book.apis["openai"]
    ok, sentence = openai_status(book, today)
    if not ok:
        notes.append(sentence)
        return []
    if work.objective not in oa["objectives"]:
        notes.append(f"OpenAI fine-tunes with SFT, DPO and reinforcement fine-tuning; not {work.objective}.")
        return []
    today = today or clock()
    out = []
    tokens = work.billable_tokens_per_epoch * work.epochs
    for model, rate in oa["models"].items():
        retired = oa.get("retired", {}).get(model)
        if retired and today >= parse_date(retired):
            continue
        if work.objective == "grpo":
            continue  # RFT is billed per hour of training, which ftplan cannot predict for OpenAI's models
        out.append(Plan("api", "openai", f"OpenAI {model}", None, 0, "managed", "managed", None, None, None, None,
                        0.0, tokens / 1e6 * rate, None, oa["source"], oa["as_of"],
                        [f"OpenAI's own model, not yours: {tokens / 1e6:,.2f}M tokens x ${rate}/M", sentence]))
    if work.objective == "grpo":
        rft = ", ".join(f"{m} ${r}/h" for m, r in oa["rft_usd_per_hour"].items())
        notes.append(f"OpenAI reinforcement fine-tuning bills wall-clock hours ({rft}); no time estimate is possible.")
    return out


@cache
def managed_models() -> dict:
    text = resources.files("ftplan.sizing").joinpath("data/managed_models.json").read_text(encoding="utf-8")
    return json.loads(text)


def api_model(api: str, model_id: str | None) -> str | None:
    """The API's model string for `model_id` (a Hugging Face id or the API's own), or None when it cannot train it."""
    if not model_id:
        return None
    key = model_id.strip().lower()
    for row in managed_models()[api]["models"]:
        if key in (row["api"].lower(), row["hf"].lower()):
            return row["api"]
    return None


def api_plans(arch: Architecture, work: Workload, method: MethodChoice, book: PriceBook,
              providers: set[str] | None, today: date | None, notes: list[str], *,
              model_id: str | None = None) -> list[Plan]:
    """Managed APIs that can train this open model, by their own billing rule; OpenAI only when asked for."""
    out: list[Plan] = []
    if providers and "openai" in providers:
        out += openai_plans(work, book, today, notes)
    tg = book.apis["together"]
    if providers and "together" not in providers:
        return out
    together_model = api_model("together", model_id)
    if together_model is None:
        listed = managed_models()["together"]
        notes.append(f"Together AI fine-tunes only the models on its list ({len(listed['models'])} read from its docs "
                     f"as of {listed['as_of']}); {model_id or 'this model'} is not on it, so no Together plan.")
        return out
    if work.objective not in tg["objectives"]:
        notes.append(f"Together AI fine-tunes with SFT and DPO (SimPO through DPO's gamma); not {work.objective}.")
        return out
    band = _together_band(arch.total_params, tg["bands"])
    if band is None:
        notes.append(f"Together AI lists prices up to 100B parameters; this model has {arch.total_params / 1e9:.0f}B.")
        return out
    full = method.adapters[0] == "full"
    key = ("dpo" if work.objective in ("dpo", "simpo") else "sft") + ("_full" if full else "_lora")
    tokens = work.billable_tokens_per_epoch * work.epochs
    usd = tokens / 1e6 * band[key]
    out.append(Plan("api", "together", tg["label"], None, 0, "full" if full else "lora", "managed", None, None, None,
                    None, 0.0, usd, None, tg["source"], tg["as_of"],
                    [f"{tokens / 1e6:,.2f}M tokens x ${band[key]}/M ({key.replace('_', ' ')}, up to "
                     f"{band['max_params_b']}B band) on {together_model}; time depends on Together's queue"]))
    return out


def openai_status(book: PriceBook, today: date | None = None) -> tuple[bool, str]:
    """(still open to new jobs, the sentence to show) from the shutdown calendar in the price data."""
    oa = book.apis["openai"]
    today = today or clock()
    cutoff = parse_date(oa["no_new_jobs_after"])
    if today > cutoff:
        return False, (f"OpenAI stopped accepting new fine-tuning jobs after {oa['no_new_jobs_after']}; fine-tune an "
                       "open model instead (Together, Modal or your own GPUs).")
    return True, (f"OpenAI is winding down fine-tuning: no new jobs after {oa['no_new_jobs_after']}, fine-tuned "
                  f"models shut down {oa['models_shut_down']}; prefer an open model you can keep.")


def pareto(plans: list[Plan]) -> list[Plan]:
    """Plans no other plan beats on both cost and time (cheapest first)."""
    timed = sorted((p for p in plans if p.hours is not None), key=lambda p: (p.usd, p.hours))
    front: list[Plan] = []
    best = math.inf
    for p in timed:
        if p.hours < best:
            front.append(p)
            best = p.hours
    return front


def apply_limits(plans: list[Plan], max_cost: float | None, max_hours: float | None) -> tuple[list[Plan], str | None]:
    """Plans within the limits, and when none is left, a sentence saying what would fit."""
    kept = [p for p in plans if (max_cost is None or p.usd <= max_cost)
            and (max_hours is None or (p.hours is not None and p.hours <= max_hours))]
    if kept or not plans:
        return kept, None
    cheapest = min(plans, key=lambda p: p.usd)
    timed = [p for p in plans if p.hours is not None]
    parts = [f"the cheapest plan is {describe(cheapest)} at ${cheapest.usd:,.2f}"
             + (f" taking {cheapest.hours:,.1f} h" if cheapest.hours is not None else "")]
    if timed:
        fastest = min(timed, key=lambda p: p.hours)
        parts.append(f"the fastest is {describe(fastest)} at {fastest.hours:,.1f} h for ${fastest.usd:,.2f}")
    within_cost = [p for p in timed if max_cost is None or p.usd <= max_cost]
    if max_hours is not None and within_cost:
        best = min(within_cost, key=lambda p: p.hours)
        parts.append(f"within ${max_cost if max_cost is not None else best.usd:,.2f} the quickest takes "
                     f"{best.hours:,.1f} h ({describe(best)})")
    limits = " and ".join(x for x in (f"--max-cost {max_cost:g}" if max_cost is not None else "",
                                      f"--max-hours {max_hours:g}" if max_hours is not None else "") if x)
    return [], (f"No plan fits {limits}: " + "; ".join(parts) + ". Raise the limit, or train fewer tokens "
                "(fewer epochs, a shorter --seq-len, less data).")


def fastest(plans: list[Plan]) -> Plan | None:
    """The quickest plan; among those within a minute or 2 % of it, the cheapest (start-up dominates tiny jobs)."""
    timed = [p for p in plans if p.hours is not None]
    if not timed:
        return None
    best = min(p.hours for p in timed)
    close = [p for p in timed if p.hours <= best + max(1 / 60, 0.02 * best)]
    return min(close, key=lambda p: (p.usd, p.hours))


def describe(p: Plan) -> str:
    if p.gpu is None:
        return p.label
    return f"{p.label} {p.count} x {p.gpu} ({p.adapter})"
