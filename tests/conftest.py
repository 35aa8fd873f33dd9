import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _wants(variable, flag):
    """True if the environment variable `variable` (a list of flags) does not name `flag` yet."""
    return flag not in os.environ.get(variable, "")


def _append(variable, flag, value):
    os.environ[variable] = f"{os.environ.get(variable, '')} {flag}={value}".strip()


# One XLA compilation cache on disk for this test session: its processes (the xdist workers and the
# apps they start) read and write it, and TensorFlow names each entry by the computation it
# compiled, so an entry is used only for the very same computation. Most app tests run the same
# tiny command again and again (crash_test runs one 24 times), and every fresh process would
# compile its train step anew. TensorFlow writes an entry to a temporary file, then renames it, so a
# killed process or two writing at once leave no torn entry. Set before TensorFlow is imported, in
# the first process; the workers and subprocesses inherit it.
_CACHE_FLAG = "--tf_xla_persistent_cache_directory"
_own_cache_dir = None  # set in the process that made the folder, which removes it
if _wants("TF_XLA_FLAGS", _CACHE_FLAG):
    _own_cache_dir = tempfile.mkdtemp(prefix="keras_vae_test_xla_cache_")
    _append("TF_XLA_FLAGS", _CACHE_FLAG, _own_cache_dir)


# XLA's compiler without LLVM's optimisations (HLO's own passes, fusion included, still run): the
# tests compile hundreds of tiny programs that each run for milliseconds, so compiling is most of
# their time (measured in docs/RESULTS.md, session 27). The compiled code computes
# the same values up to float rounding; users and benchmarks get XLA's default level.
_OPT_FLAG = "--xla_backend_optimization_level"
if _wants("XLA_FLAGS", _OPT_FLAG):
    _append("XLA_FLAGS", _OPT_FLAG, 0)


def pytest_unconfigure(config):
    if _own_cache_dir:
        shutil.rmtree(_own_cache_dir, ignore_errors=True)
