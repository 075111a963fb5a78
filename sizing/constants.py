"""Estimator constants fitted on ../shared/calibration/published-measurements.json.

Each constant is one number for every model, GPU and framework, found by `bench/fit_constants.py`
(a grid search over all expressible rows); `bench/calibration.py` prints
the errors over all expressible rows, and README "Accuracy" records the figures. Change a
constant only with that benchmark run before and after.
"""

# Saved activations beyond the tensors modelled one by one (rotary tables, attention masks and
# softmax statistics, contiguous copies, kernel workspaces, autograd bookkeeping): a multiplier on
# the modelled bytes. The tensor-by-tensor count alone is checked against autograd on the CPU
# (tests/sizing/test_activation_probe.py); this factor covers what a GPU step adds.
ACTIVATION_OVERHEAD = 1.2

# Caching-allocator slack: reserved / allocated at the peak (fragmentation, rounding to blocks).
ALLOCATOR_OVERHEAD = 0.1

# CUDA context, cuBLAS/cuDNN workspaces and kernels resident on the device (bytes).
CUDA_CONTEXT_BYTES = int(0.8 * 2**30)

# Bytes per token per vocabulary entry held at the loss:
#  standard: 16-bit logits + fp32 upcast + fp32 log-softmax + fp32 gradient during backward
#  chunked: 16-bit logits and their 16-bit gradient, fp32 only one chunk at a time
LOGITS_BYTES_STANDARD_EXTRA = 12  # on top of the 16-bit logits themselves
LOGITS_BYTES_CHUNKED_FACTOR = 2  # x the activation dtype
LOGITS_BYTES_FUSED_BLOCK_TOKENS = 1024  # tokens per block of a fused linear+cross-entropy

# Model FLOPs utilisation (fraction of dense BF16 peak) reached by a well-fed training step.
# MFU = MFU_PEAK * tokens / (tokens + MFU_HALF_TOKENS) * width / (width + MFU_HALF_WIDTH),
# lowered for adapters (small, unfused matmuls) and for consumer cards.
MFU_PEAK = 0.7
MFU_HALF_TOKENS = 0  # the fit found no micro-batch dependence in the data (all rows >= 1k tokens)
MFU_HALF_WIDTH = 256
MFU_ADAPTER_FACTOR = 0.9
MFU_TIER = {"datacenter": 1.0, "inference": 0.8, "workstation": 0.9, "consumer": 0.9}

# Fraction of inter-GPU communication hidden behind compute (FSDP prefetch, DDP bucketing).
COMM_OVERLAP = 0.6

# GRPO generation (decode) model: sequences decoded together per GPU per step, and the fraction of
# memory bandwidth a decode step reaches while streaming the weights. Assumptions [U] (no
# measured GRPO rows in the calibration data yet): TRL generates num_generations x per-device batch
# completions at once; HF generate reaches roughly half of peak bandwidth.
DECODE_BATCH_PER_GPU = 32
DECODE_BANDWIDTH_EFFICIENCY = 0.5
