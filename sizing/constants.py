"""Estimator constants fitted on published measurements (bench/data/, each row with its source).

Each constant is one number for every model, GPU and program, found by `bench/fit_constants.py`
over every expressible row of every source. `bench/calibration.py` scores them out of sample: each
source is predicted by constants refitted without it (leave-one-source-out), and README "Accuracy"
records those figures. Change a constant only with that benchmark run before and after.
"""

# Saved activations beyond the tensors modelled one by one (rotary tables, attention masks and
# softmax statistics, contiguous copies, kernel workspaces, autograd bookkeeping): a multiplier on
# the modelled bytes. The tensor-by-tensor count alone is checked against autograd on the CPU
# (tests/sizing/test_activation_probe.py); this factor covers what a GPU step adds.
ACTIVATION_OVERHEAD = 1.2

# Caching-allocator slack: reserved / allocated at the peak (fragmentation, rounding to blocks).
ALLOCATOR_OVERHEAD = 0.06

# CUDA context, cuBLAS/cuDNN workspaces and kernels resident on the device (bytes).
CUDA_CONTEXT_BYTES = 1073741824

# Bytes per token per vocabulary entry held at the loss:
#  standard: the 16-bit logits, then at least the fp32 log-softmax saved for backward and its fp32
#   gradient (8 more), at most also the fp32 upcast and the 16-bit gradient (14 more), as the peak
#   falls before or after the upcast is freed: the fit picks within that range
#  chunked: 16-bit logits and their 16-bit gradient, fp32 only one chunk at a time
LOGITS_BYTES_STANDARD_EXTRA = 10  # on top of the 16-bit logits themselves
LOGITS_BYTES_CHUNKED_FACTOR = 2  # x the activation dtype
LOGITS_BYTES_FUSED_BLOCK_TOKENS = 1024  # tokens per block of a fused linear+cross-entropy

# How far a memory estimate may be off: about the 80th percentile of |error| on published runs,
# each source predicted by constants fitted without it (bench/calibration.py). A plan whose headroom
# lies inside it is "tight", not "fits"; the planner keeps only plans that fit with this margin.
MEMORY_UNCERTAINTY = 0.15
# The same for speed: about the median |error| leave-one-source-out (README "Accuracy").
THROUGHPUT_UNCERTAINTY = 0.20

# ---- speed (sizing/throughput.py) ----------------------------------------------------------------
# Sustained fraction of the dense BF16 peak a large training matmul reaches; narrow models lose more:
# efficiency = MATMUL_EFFICIENCY * hidden / (hidden + MATMUL_HALF_WIDTH).
MATMUL_EFFICIENCY = 0.6
MATMUL_HALF_WIDTH = 0
# Times the elementwise work (norms, activations, residual adds, logits) reads and writes the bytes a
# layer saves for backward, per pass, at the card's bandwidth.
ELEMENTWISE_PASSES = 8.0
# CPU time to launch one decoder layer's kernels (forward + backward, eager PyTorch + transformers),
# one more module call in a layer (a LoRA adapter, an MoE expert), FSDP/ZeRO-3's gather hooks per
# layer, and a micro-step's fixed cost (data, loss, bookkeeping). A fused program (Unsloth,
# torch.compile, Liger's kernels) launches FUSED_LAUNCH_FRACTION of an eager program's kernels and
# moves FUSED_ELEMENTWISE_FRACTION of its elementwise bytes (one kernel reads a tensor once for a
# norm, an activation and a residual add that eager PyTorch runs as separate passes).
LAYER_SECONDS = 0.0005
MODULE_SECONDS = 0.0006
SHARDED_LAYER_SECONDS = 0.006
STEP_SECONDS = 0.02
# CPU time of one optimizer step beyond its memory traffic (gradient clipping, zero_grad, the scheduler,
# logging), paid once per optimizer step: spread over the gradient-accumulation micro-steps.
OPTIMIZER_STEP_SECONDS = 0.02
FUSED_LAUNCH_FRACTION = 0.5
FUSED_ELEMENTWISE_FRACTION = 0.1
# Fraction of a link's one-way bandwidth collectives reach, and of their time hidden behind compute
# (FSDP prefetch, DDP bucketing). Cards without peer-to-peer (gpus.json `peer_to_peer`: GeForce
# 3090/4090) stage every transfer through host memory, one path all the node's GPUs share: each
# gets 1/n of it (sizing/throughput.py).
LINK_EFFICIENCY = 0.35
COMM_OVERLAP = 0.6
# Inter-node bandwidth per GPU when a job spans nodes: one 400 Gb/s NIC per GPU, the layout of
# NVIDIA's DGX H100 (8 x ConnectX-7 400 Gb/s; docs.nvidia.com/dgx/dgxh100-user-guide, 2024). An
# assumption for providers that do not publish theirs; not fitted.
INTER_NODE_GBS_PER_GPU = 50.0

# GRPO generation (decode) model: sequences decoded together per GPU per step, and the fraction of
# memory bandwidth a decode step reaches while streaming the weights. Assumptions [U] (no
# measured GRPO rows in the calibration data yet): TRL generates num_generations x per-device batch
# completions at once; HF generate reaches roughly half of peak bandwidth.
DECODE_BATCH_PER_GPU = 32
DECODE_BANDWIDTH_EFFICIENCY = 0.5
