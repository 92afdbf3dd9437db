"""Builds bp_torch, with its optional C++ extension bp_torch._C.

    pip install --no-build-isolation .                     # with the C++ backend
    BP_TORCH_NO_EXT=1 pip install --no-build-isolation .   # pure Python backend only

--no-build-isolation lets the build use the torch already installed, as torch extensions must. If the extension
cannot be compiled (no compiler, say), the package still installs and runs on the Python backend.
"""
import glob
import os
import shlex
import sys

from setuptools import setup


def cpu_flags():
    """-O3 and the widest vector ISA of this machine that torch's at::vec has code for: it picks its AVX-512 code
    when CPU_CAPABILITY_AVX512 is defined, its AVX2 code for CPU_CAPABILITY_AVX2, and scalar code otherwise. The
    extension is built where it runs (pip install from source), so the build machine's ISA is the right one."""
    flags = ["-O3", "-fopenmp"]
    try:
        cpuinfo = set(open("/proc/cpuinfo").read().split())
    except OSError:
        cpuinfo = set()
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"} <= cpuinfo:
        flags += ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma",
                  "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]
    elif {"avx2", "fma"} <= cpuinfo:
        flags += ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return flags


def extra_flags():
    """Flags added to both the compile and the link, e.g. the sanitizers of scripts/asan_test.sh:
    BP_TORCH_EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer"."""
    return shlex.split(os.environ.get("BP_TORCH_EXTRA_CFLAGS", ""))


def extension_build():
    if os.environ.get("BP_TORCH_NO_EXT") == "1":
        print("bp_torch: BP_TORCH_NO_EXT=1, installing the Python backend only", file=sys.stderr)
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    class OptionalBuildExtension(BuildExtension):
        """A failed compile leaves a working pure-Python package, and says so once."""

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as err:  # noqa: BLE001 - any compiler failure means "no extension", not "no package"
                print(f"bp_torch: could not build the C++ extension ({err}); "
                      "installing the Python backend only", file=sys.stderr)

    ext = CppExtension(
        "bp_torch._C",
        sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp")),
        extra_compile_args={"cxx": cpu_flags() + extra_flags()},
        extra_link_args=["-fopenmp"] + extra_flags(),
    )
    return [ext], {"build_ext": OptionalBuildExtension}


ext_modules, cmdclass = extension_build()

# The package's metadata is in pyproject.toml; setup.py adds only the extension.
setup(ext_modules=ext_modules, cmdclass=cmdclass)
