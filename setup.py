"""Builds bp_torch, with its C++ extension bp_torch._C.

    pip install --no-build-isolation .                     # with the C++ backend; a failed compile fails the install
    BP_TORCH_NO_EXT=1 pip install --no-build-isolation .   # pure Python backend only
    BP_TORCH_DEBUG=1 pip install --no-build-isolation .    # the extension with debug info, unoptimised (-g -O0)

--no-build-isolation lets the build use the torch already installed, as torch extensions must.

No instruction set of the build machine is applied to the extension as a whole: it is compiled for baseline x86-64
(or the architecture's baseline elsewhere), and only the SIMD kernels (csrc/cpu/capability/) are compiled again for
AVX2 and for AVX-512, each copy in its own namespace, chosen at run time from the CPU present. One build runs on any
x86-64 CPU that torch runs on.
"""

import glob
import os
import pathlib
import platform
import re
import shlex
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from setuptools import setup
from setuptools.errors import CompileError

# The capability set: the files compiled once per CPU capability (csrc/cpu/capability/internal.h says why they keep to
# their copy's namespace).
KERNELS = sorted(glob.glob("csrc/cpu/capability/*.cpp"))
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# The copies of the capability set beyond the baseline one, with the flags of ATen's own kernel copies of the same
# name (CPU_CAPABILITY names the copy's namespace, in ours as in at::vec).
CAPABILITIES = (
    {
        "AVX2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2"],
        "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX512"],
    }
    if IS_X86_64
    else {}
)


def base_flags():
    """The flags of every file: optimised without debug info (the sysconfig CFLAGS that setuptools starts from
    carry -g, which -g0 after it cancels), or BP_TORCH_DEBUG=1's -g -O0. No -m flag: baseline code only."""
    debug = os.environ.get("BP_TORCH_DEBUG") == "1"
    flags = ["-g", "-O0"] if debug else ["-O3", "-g0"]
    flags += ["-fopenmp", "-DCPU_CAPABILITY=DEFAULT"]
    if IS_X86_64:
        flags.append("-DBP_TORCH_X86_CAPABILITIES")
    return flags


def capability_flags(name):
    """The extra flags of the capability set's copy for capability `name` (after base_flags)."""
    return ["-UCPU_CAPABILITY", f"-DCPU_CAPABILITY={name}"] + CAPABILITIES[name]


def extra_flags():
    """Flags added to both the compile and the link, e.g. the sanitizers of scripts/asan_test.sh:
    BP_TORCH_EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer"."""
    return shlex.split(os.environ.get("BP_TORCH_EXTRA_CFLAGS", ""))


def first_compiler_error(log):
    """The compiler's first error line in a build log, or None."""
    match = re.search(r"^.*?\b(?:fatal )?error: .*$", log, re.MULTILINE)
    return match.group(0).strip() if match else None


def write_build_info(extension):
    """bp_torch/_build_info.py records whether this build has the extension, so that an import that cannot find it
    can tell a deliberate pure-Python install (silent) from a broken one (a warning)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bp_torch", "_build_info.py")
    text = (
        "# Written by setup.py at build time.\n"
        "# Whether this build of bp_torch has its C++ extension (False: built with BP_TORCH_NO_EXT=1).\n"
        f"EXTENSION = {extension}\n"
    )
    try:
        if not os.path.exists(path) or pathlib.Path(path).read_text() != text:
            with open(path, "w") as f:
                f.write(text)
    except OSError:
        pass  # a read-only tree: the import then treats the extension as expected


def extension_build():
    if os.environ.get("BP_TORCH_NO_EXT") == "1":
        print("bp_torch: BP_TORCH_NO_EXT=1, installing the Python backend only", file=sys.stderr)
        write_build_info(False)
        return [], {}
    write_build_info(True)
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    class CapabilityBuildExtension(BuildExtension):
        """Compiles the capability set (KERNELS) once more per capability (each copy in its own folder of
        build_temp, with its flags), at the same time as the other sources, and links all the objects into one
        library. The compilers' output is passed on; a failed compile fails the build, naming the compiler's first
        error."""

        def build_extension(self, ext):
            compile_sources = self.compiler.compile

            def compile_with_copies(sources, output_dir=None, extra_postargs=None, **kwargs):
                jobs = [(list(sources), output_dir, extra_postargs)]
                for name in CAPABILITIES:
                    if isinstance(extra_postargs, dict):
                        postargs = {**extra_postargs, "cxx": extra_postargs["cxx"] + capability_flags(name)}
                    else:
                        postargs = list(extra_postargs or []) + capability_flags(name)
                    jobs.append((list(KERNELS), os.path.join(output_dir, name.lower()), postargs))
                with tempfile.TemporaryFile() as log:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    saved = os.dup(1), os.dup(2)
                    os.dup2(log.fileno(), 1)  # the compilers' output, to find their first error in
                    os.dup2(log.fileno(), 2)
                    try:
                        with ThreadPoolExecutor(len(jobs)) as pool:
                            futures = [
                                pool.submit(compile_sources, files, output_dir=folder, extra_postargs=args, **kwargs)
                                for files, folder, args in jobs
                            ]
                            errors = [f.exception() for f in futures]
                    finally:
                        os.dup2(saved[0], 1)
                        os.dup2(saved[1], 2)
                        os.close(saved[0])
                        os.close(saved[1])
                        log.seek(0)
                        output = log.read().decode(errors="replace")
                        sys.stdout.write(output)
                        sys.stdout.flush()
                    failed = [e for e in errors if e is not None]
                    if failed:
                        first = first_compiler_error(output) or str(failed[0])
                        print(f"bp_torch: compiling the C++ extension failed: {first}", file=sys.stderr)
                        raise CompileError(
                            f"bp_torch: compiling the C++ extension failed: {first}\n"
                            "(BP_TORCH_NO_EXT=1 installs bp_torch without it, on the Python backend)"
                        )
                    return [obj for future in futures for obj in future.result()]

            self.compiler.compile = compile_with_copies
            try:
                super().build_extension(ext)
            finally:
                self.compiler.compile = compile_sources

    ext = CppExtension(
        "bp_torch._C",
        sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp")) + KERNELS,
        extra_compile_args={"cxx": base_flags() + extra_flags()},
        extra_link_args=["-fopenmp"] + extra_flags(),
        depends=sorted(glob.glob("csrc/**/*.h", recursive=True)),
    )
    return [ext], {"build_ext": CapabilityBuildExtension}


ext_modules, cmdclass = extension_build()

# The package's metadata is in pyproject.toml; setup.py adds only the extension.
setup(ext_modules=ext_modules, cmdclass=cmdclass)
