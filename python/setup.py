# Build of the simdr Python package: the simdr/ package and its C extension
# simdr._simdr, written against the CPython C API and the public simdr.h.
#
# Where the engine comes from (first that applies):
#   1. SIMDR_LIBRARY=/path/to/libsimdr.a (or .so): link that build, e.g. the
#      tree's own build/<dir>/src/libsimdr.a (the ctest test does this).
#   2. ../src exists (a checkout of this repository): compile the engine's
#      sources into the extension, so it needs no installed libsimdr.
#   3. otherwise: link an installed libsimdr found with pkg-config (simdr.pc).
# Other environment knobs: SIMDR_SANITIZE="address;undefined" compiles and
# links with those sanitizers; SIMDR_WERROR=1 turns warnings into errors.
import glob
import os
import re
import shlex
import subprocess

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ENGINE_SRC = os.path.join(REPO, "src")
ENGINE_INCLUDE = os.path.join(REPO, "include")
os.chdir(HERE)


def pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return shlex.split(out.stdout)


def engine_build():
    """Returns (sources, include_dirs, extra_objects, link_flags, compile_flags)."""
    deps = pkg_config("--libs", "libxxhash", "libisal", "zlib") or ["-lxxhash", "-lisal", "-lz"]
    library = os.environ.get("SIMDR_LIBRARY")
    if library:
        return [], [ENGINE_INCLUDE], [os.path.abspath(library)], deps + ["-lpthread"], []
    if os.path.isdir(ENGINE_SRC):
        sources = sorted(glob.glob(os.path.join(ENGINE_SRC, "*.c")))
        return (sources, [ENGINE_INCLUDE, ENGINE_SRC], [], deps + ["-lpthread"],
                (pkg_config("--cflags", "libxxhash", "libisal", "zlib") or []))
    flags = pkg_config("--cflags", "--libs", "simdr")
    if flags is None:
        raise SystemExit("simdr: no engine found: set SIMDR_LIBRARY, build from the repository "
                         "checkout, or install libsimdr (pkg-config simdr)")
    cflags = [f for f in flags if f.startswith("-I")]
    return [], [f[2:] for f in cflags], [], [f for f in flags if f not in cflags], []


engine_sources, include_dirs, extra_objects, link_flags, engine_cflags = engine_build()
compile_flags = ["-std=c11", "-D_GNU_SOURCE", "-fvisibility=hidden", "-Wall", "-Wextra",
                 "-Wshadow", "-Wpointer-arith", "-Wno-missing-field-initializers"] + engine_cflags
if os.environ.get("SIMDR_WERROR") == "1":
    compile_flags.append("-Werror")
sanitize = os.environ.get("SIMDR_SANITIZE", "").replace(";", ",").strip(",")
if sanitize:
    compile_flags += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer",
                      "-fno-sanitize-recover=all"]
    link_flags += [f"-fsanitize={sanitize}"]

def simdr_version():
    """The version written once, in simdr.h's SIMDR_VERSION_* macros."""
    for header in (os.path.join(ENGINE_INCLUDE, "simdr.h"),):
        if os.path.exists(header):
            text = open(header).read()
            parts = [re.search(r"#define SIMDR_VERSION_%s (\d+)" % p, text).group(1)
                     for p in ("MAJOR", "MINOR", "PATCH")]
            return ".".join(parts)
    return (pkg_config("--modversion", "simdr") or ["0"])[0]


extension = Extension(
    "simdr._simdr",
    sources=sorted(glob.glob(os.path.join("src", "py_*.c"))) + engine_sources,
    include_dirs=include_dirs,
    extra_objects=extra_objects,
    extra_compile_args=compile_flags,
    extra_link_args=link_flags,
    depends=glob.glob(os.path.join("src", "*.h")),
)

setup(
    name="simdr",
    version=simdr_version(),
    description="Zero-copy Python binding of simdr, a simd-r-drive compatible storage engine",
    long_description="See the Python section of the simdr README.",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=["simdr"],
    package_data={"simdr": ["*.pyi", "py.typed"]},
    ext_modules=[extension],
    zip_safe=False,
)
