"""Where `MLP.fit`'s time goes, by compiled function (Linux perf, CPU-clock samples).

    python benchmarks/perf_fit.py [--dataset mnist] [--batch-size 128] [--epochs 12] [--threads 1]

A child process loads the data set, warms a plain-SGD 784-128-64-10 model up with one epoch,
and then, with `perf record -e cpu-clock -p` attached (no hardware counters needed, so it works
in a VM), fits `--epochs` more; perf stops before the child exits, so interpreter teardown is
not counted. perf cannot name the code Numba generates, so the samples in it are mapped here:
the child prints the address of the compiled training loop, and the loop's cache entry (an
object file, in a private `NUMBA_CACHE_DIR`) lists every compiled function linked into it
with its offset. `NUMBA_ENABLE_PROFILING=1` keeps those functions as separate symbols. The
first run compiles everything into that cache (a minute or two, in a child of its own: the
profiled child must load the loop from the cache); later runs reuse it.

Prints the share of the samples per compiled function and per shared library (OpenBLAS,
libpython, libc, ...). Needs `perf` (linux-perf) and binutils' `nm` and `objdump`.
"""

import argparse
import bisect
import collections
import glob
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import os, sys, time
import fastnn
from fastnn import bench
from fastnn.backends import jit_loop
dataset, batch_size, epochs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
bench.set_threads(threads)
x, y = bench.load_training_set(dataset, None)
model = fastnn.MLP([128, 64], optimizer="sgd", lr=0.01, seed=0)
model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
if epochs == 0:  # the cache-filling run
    sys.exit(0)
for cres in jit_loop._train_loop.overloads.values():
    print("loop", cres.fndesc.llvm_func_name, cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
print("done", time.perf_counter() - start, flush=True)
sys.stdin.readline()
"""


def object_code(nbc_path):
    """The ELF object file inside a Numba cache entry (.nbc), or None."""
    blob = open(nbc_path, "rb").read()
    start = blob.find(b"\x7fELF")
    if start < 0:
        return None
    section_headers, = struct.unpack_from("<Q", blob, start + 0x28)
    entry_size, count = struct.unpack_from("<HH", blob, start + 0x3A)
    return blob[start:start + section_headers + entry_size * count]


def readable(name):
    """A symbol's dotted name: demangled by nm, or Numba's length-prefixed parts read here."""
    if name.startswith("_ZN"):
        parts, i = [], 3
        while i < len(name) and name[i].isdigit():
            digits = re.match(r"\d+", name[i:]).group()
            i += len(digits)
            parts.append(name[i:i + int(digits)])
            i += int(digits)
        name = "::".join(parts)
    name = re.sub(r"\[abi:[^\]]*\]", "", name).split("(")[0]
    return name.replace("cpython::", "(Python entry) ").replace("fastnn::backends::", "")[:70]


def symbols(obj_path):
    """(offset, demangled name) of the functions in the object's code section, by offset, and its size."""
    names = []
    for line in subprocess.run(["nm", "-n", "-C", obj_path], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            names.append((int(parts[0], 16), readable(parts[2])))
    headers = subprocess.run(["objdump", "-h", obj_path], capture_output=True, text=True, check=True).stdout
    size = max(int(line.split()[2], 16) for line in headers.splitlines() if re.search(r"\s\.l?text\s", line))
    return names, size


def loop_object(cache_dir, mangled, workdir):
    """Path of the object file of the cache entry that defines ``mangled``."""
    for nbc in glob.glob(os.path.join(cache_dir, "**", "jit_loop._train_loop-*.nbc"), recursive=True):
        code = object_code(nbc)
        if code and mangled.encode() in code:
            path = os.path.join(workdir, "train_loop.o")
            open(path, "wb").write(code)
            return path
    raise SystemExit(f"no cache entry in {cache_dir} defines {mangled}")


def profile(args, env, workdir):
    """Runs the profiled child under perf (files in ``workdir``); returns (samples per compiled
    function or library, all samples, seconds of the profiled fit)."""
    data = os.path.join(workdir, "perf.data")
    child = subprocess.Popen([sys.executable, "-c", CHILD, args.dataset, str(args.batch_size), str(args.epochs),
                              str(args.threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                             stderr=subprocess.DEVNULL)
    loops = []
    for line in child.stdout:
        if line.startswith("loop "):
            _, mangled, address = line.split()
            loops.append((mangled, int(address)))
        elif line.startswith("ready"):
            break
    perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-p", str(child.pid), "-o", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # perf attached
    child.stdin.write("go\n")
    child.stdin.flush()
    done = child.stdout.readline().split()
    perf.send_signal(signal.SIGINT)
    perf.wait()
    child.stdin.write("exit\n")
    child.stdin.flush()
    child.wait()
    if not loops or len(done) != 2:
        raise SystemExit(f"perf_fit: the profiled fit did not run to its end (exit status {child.returncode})")
    mangled, base = loops[-1]
    names, size = symbols(loop_object(args.cache_dir, mangled, workdir))
    offsets = [offset for offset, _ in names]
    script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,dso"], capture_output=True, text=True,
                            check=True).stdout
    shares, total = collections.Counter(), 0
    for line in script.splitlines():
        parts = line.split()
        if not parts:
            continue
        total += 1
        ip, dso = int(parts[0], 16), " ".join(parts[1:])
        offset = ip - base
        if 0 <= offset < size:
            shares["compiled " + names[max(bisect.bisect_right(offsets, offset) - 1, 0)][1]] += 1
        elif "perf-" in dso or "JIT" in dso or "unknown" in dso:
            shares["compiled, outside the training loop"] += 1
        else:
            shares[os.path.basename(dso.strip("()"))] += 1
    return shares, total, float(done[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "fastnn-perf-cache"),
                        help="NUMBA_CACHE_DIR of the child (compiled once, with NUMBA_ENABLE_PROFILING=1)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    for tool in ("perf", "nm", "objdump"):
        if shutil.which(tool) is None:
            raise SystemExit(f"perf_fit needs `{tool}` on PATH (Debian: apt install linux-perf binutils)")
    env = dict(os.environ, NUMBA_ENABLE_PROFILING="1", NUMBA_CACHE_DIR=args.cache_dir)
    # The profiled child must load the loop from the cache: code compiled in-process is not
    # laid out as the cached object file is. A first child fills the cache (quick once warm).
    filling = subprocess.run([sys.executable, "-c", CHILD, args.dataset, str(args.batch_size), "0", str(args.threads)],
                             env=env, stderr=subprocess.PIPE, text=True)
    if filling.returncode != 0:  # e.g. an unknown data set: the child's own last words
        raise SystemExit("perf_fit: the fit failed before profiling:\n" + "\n".join(filling.stderr.splitlines()[-3:]))
    # perf.data and the loop's object file; removed on every way out, an error included
    with tempfile.TemporaryDirectory(prefix="fastnn-perf-") as workdir:
        shares, total, seconds = profile(args, env, workdir)
    print(f"MLP.fit {args.dataset} 784-128-64-10 batch {args.batch_size}, {args.threads} thread(s), "
          f"{args.epochs} epochs in {seconds:.2f} s; {total} samples (perf cpu-clock)")
    for name, count in shares.most_common(args.top):
        print(f"{100 * count / total:6.1f}%  {name}")


if __name__ == "__main__":
    main()
