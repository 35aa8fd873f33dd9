"""The machine a measurement ran on, its dense-matmul ceiling, and a timer. Flag-free, unlike
the benchmark scripts (which define absl flags at import), so that any of them can use it.

Every benchmark line names its device with `device_name()`: the GPU, or the CPU's model
and its vector instruction sets, since machines of one name differ (AVX-512 or only AVX2)
and ratios move with them.
"""

import platform
import time

# Vector instruction sets worth naming, as /proc/cpuinfo spells them (x86 "flags", Arm "Features").
VECTOR_EXTENSIONS = ("avx512f", "avx512_bf16", "amx_tile", "avx2", "fma", "sve", "asimd")


def cpu_description(cpuinfo="/proc/cpuinfo"):
    """The CPU's model name and the `VECTOR_EXTENSIONS` it has, e.g. "AMD EPYC; avx512f avx2 fma"."""
    model, features = None, set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name" and model is None:
                    model = value
                elif key in ("flags", "Features") and not features:
                    features = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or "unknown"
    present = [name for name in VECTOR_EXTENSIONS if name in features]
    return f"{model}; {' '.join(present)}" if present else model


def device_name():
    """The device TensorFlow runs on: the first GPU if there is one, else the CPU (`cpu_description`)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus and tf.config.list_logical_devices("GPU"):
        return f"GPU:0 ({tf.config.experimental.get_device_details(gpus[0]).get('device_name', 'unknown')})"
    return f"CPU:0 ({cpu_description()})"


def timed(fn):
    """Seconds one call of `fn` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_peak(n=2048, calls=20):
    """Best GFLOP/s of an n x n float32 matmul (XLA-compiled, results kept on the device)."""
    import tensorflow as tf

    a = tf.random.stateless_normal([n, n], seed=[0, 0])
    matmul = tf.function(lambda a, b: tf.matmul(a, b), jit_compile=True)
    matmul(a, a).numpy()
    best = min(timed(lambda: matmul(a, a).numpy()) for _ in range(calls))
    return {"examples_per_sec": None, "gflops": 2 * n**3 / best / 1e9, "matrix_size": n}
