"""validate: run a plan's iterations with ServePlan's own kernels, time them, calibrate.

    kernels/      Triton kernels (GEMM, RMSNorm, RoPE, SwiGLU, flash and paged attention)
    devices       the HardwareSpec of the device that runs the measurements (a GPU preset, or
                  this CPU measured at run time)
    shapes        a deployment (+ workload) -> the iteration shapes each pool will run
    budget        scale shapes and layer counts down to what the device can hold and time
    ops           the operators twice: Triton kernels, and torch on the CPU
    model_runner  a transformer block and a small model built from those operators
    timing        CUDA: do_bench over rotating inputs; CPU: perf_counter medians
    runner        plan -> shapes -> measurements (native rows) -> fit -> calibration profile
    report        predicted vs measured per shape, as a table and a plotly scatter

Everything that needs torch or triton imports it inside functions: `import validate` is cheap,
and the planner imports it only inside `serveplan validate`.
"""
