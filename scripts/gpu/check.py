#!/usr/bin/env python3
"""The one-shot GPU check (issue 18): runs on a bare GPU machine in one call, from the
repository root, with the folder that scripts/gpu/pack.sh made (`.gpu/`: the compressed
srlm binary, the default model's tokenizer, a trimmed PostgreSQL).

Stages, each guarded (a failure is recorded and the next stage runs), each with a time
limit inside one overall budget:
  env         nvidia-smi, torch.cuda; without a GPU (and without --dry-run) it stops here
  srlm        decompress the binary, CUDA libraries from Python's nvidia-* wheels
  postgres    initdb + pg_ctl on 127.0.0.1 (trust auth), database srlm
  model       A: a Llama-shaped ~1B model, random init (+ a few sharpening steps) and the
              default model's tokenizer, as an HF directory; B: another seed (hot-swap)
  serve       srlm serve --engine auto on A
  correctness greedy prompts alone, concurrently, and n=4: equal texts
  bench       srlm bench chat at concurrency 1, 8, 32, 64 (streamed)
  hotswap     activate B (and back to A) under load: failed requests, load time, memory
  pairs       /generate with the judge, to give `srlm train dpo` pairs in Postgres
  hf          transformers' batched generate on A at the same concurrencies
  train       srlm bench train full / lora, srlm train dpo (LoRA, pairs from Postgres),
              and a plain PyTorch DPO step on the same model and pair sizes
Results: $OUT/results.json (rewritten after every stage), $OUT/summary.txt (the table
printed last), logs in $OUT/check.log, $OUT/stages.log, $OUT/serve.log.

    scripts/gpu/check.sh [--dry-run] [--budget-s S] [--stages a,b,...] [--skip a,b,...]

--dry-run: a tiny model and small counts, on whatever device there is (CPU here), to
test the plumbing; without a GPU it runs everything on the CPU and says so.
"""
import argparse
import concurrent.futures
import glob
import json
import lzma
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import traceback
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(REPO, "scripts", "gpu")
H200_BANDWIDTH = 4.8e12  # bytes/s, datasheet
# mistralrs's engine logs this every 5 s: how many sequences its scheduler last kept running
# (decoding together) and waiting. Before the vendored scheduler patch a decode step ran only
# the shortest length group of them.
SCHEDULER_LINE = re.compile(r"Throughput \(T/s\) ([0-9.]+).*?(\d+) running, (\d+) waiting")
ADMIN_TOKEN = "gpu-check-admin"
# src/bench/chat.rs DEFAULT_PROMPTS: the HF anchor renders the same prompts.
BENCH_PROMPTS = [
    "Give one tip for learning to cook.",
    "Explain what a hash map is.",
    "How do I keep basil alive?",
    "Why is the sea salty?",
    "Write a haiku about autumn rain.",
    "What is the difference between weather and climate?",
    "Suggest a name for a small bakery and say why.",
    "How does a bicycle stay upright?",
]
CORRECTNESS_PROMPTS = [
    "Why is the sky blue?",
    "Write a short poem about a lighthouse keeper who has never seen the sea, in four lines.",
    "List three uses of baking soda.",
    "Translate 'good morning' into French, Spanish and German, and say which is most formal.",
    "What is 17 times 23?",
    "Explain recursion to a ten-year-old using an example about Russian dolls and a staircase.",
    "Name a planet.",
    "Describe the water cycle: evaporation, condensation, precipitation and collection, one sentence each.",
]
STAGES = ["env", "srlm", "postgres", "model", "serve", "correctness", "bench", "profile", "hotswap", "pairs", "stop", "hf", "train"]

SETTINGS = {
    "gpu": dict(shape="1b", sharpen=60, device="cuda", correct_tokens=32, bench_tokens=128,
                levels={1: 8, 8: 16, 32: 64, 64: 128}, swap_concurrency=16, swap_tokens=64, swap_load_s=24,
                pairs_prompts=24, gen_tokens=48, judge_tokens=16,
                train=dict(pairs=16, prompt_len=128, answer_len=128, batch_size=16, micro_batch=4),
                max_seqs=64, budget=510),
    "dry": dict(shape="tiny", sharpen=2, device="cpu", correct_tokens=12, bench_tokens=16,
                levels={1: 2, 4: 4}, swap_concurrency=4, swap_tokens=16, swap_load_s=10,
                pairs_prompts=4, gen_tokens=12, judge_tokens=8,
                train=dict(pairs=2, prompt_len=16, answer_len=16, batch_size=2, micro_batch=1),
                max_seqs=8, budget=1800),
}


# ---- small helpers ------------------------------------------------------------------

def http(method, url, body=None, timeout=60, token=None):
    """(status, parsed JSON or text) of one HTTP request; never raises on HTTP errors."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gib(b):
    return None if b is None else round(b / 2**30, 3)


def find_files(names, roots, deadline):
    """The folder of the first file of each of `names` under `roots`, in one walk that
    follows no links to folders (a recursive glob follows them: a tree with a link back
    up never ends), until all are found or `deadline` (time.time()) passes."""
    found = {}
    for root in roots:
        for d, _, files in os.walk(root, followlinks=False):
            for name in set(names).intersection(files).difference(found):
                found[name] = d
            if len(found) == len(names) or time.time() > deadline:
                return found
    return found


def last_json(text):
    """The last line of `text` that parses as a JSON object or list."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") or line.startswith("["):
            try:
                return json.loads(line)
            except ValueError:
                continue
    try:
        return json.loads(text)
    except ValueError:
        return None


class GpuMemory:
    """Polls the GPU's used memory (NVML, else nvidia-smi) in the background."""

    def __init__(self, interval=0.2):
        self.samples = []  # (time, used bytes)
        self.interval = interval
        self.nvml = None
        self.source = None
        try:
            import pynvml  # nvidia-ml-py
            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.nvml = pynvml
            self.source = "nvml"
        except Exception:
            if shutil.which("nvidia-smi"):
                self.source = "nvidia-smi"
        self.stop_flag = threading.Event()
        if self.source:
            threading.Thread(target=self._run, daemon=True).start()

    def read(self):
        if self.nvml:
            return self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10).stdout
        return int(float(out.strip().splitlines()[0])) * 2**20

    def _run(self):
        while not self.stop_flag.is_set():
            try:
                self.samples.append((time.time(), self.read()))
            except Exception:
                pass
            time.sleep(self.interval)

    def now(self):
        if not self.source:
            return None
        try:
            return self.read()
        except Exception:
            return None

    def peak(self, t0, t1=None):
        t1 = t1 or time.time()
        xs = [b for t, b in self.samples if t0 <= t <= t1]
        return max(xs) if xs else None

    def processes(self):
        """{pid: used bytes} of compute processes, where the driver tells."""
        try:
            if self.nvml:
                return {p.pid: p.usedGpuMemory for p in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)}
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
            procs = {}
            for line in out.strip().splitlines():
                pid, mem = [x.strip() for x in line.split(",")]
                procs[int(pid)] = int(float(mem)) * 2**20
            return procs
        except Exception:
            return {}


class SkipStage(Exception):
    pass


# ---- the run ------------------------------------------------------------------------

class Check:
    def __init__(self, args):
        self.args = args
        self.t0 = time.time()
        self.mode = "dry" if args.dry_run else "gpu"
        self.cfg = dict(SETTINGS[self.mode])
        self.budget = args.budget_s or self.cfg["budget"]
        self.deadline = self.t0 + self.budget
        self.out = os.path.abspath(args.out)
        self.work = os.path.abspath(args.work)
        os.makedirs(self.out, exist_ok=True)
        os.makedirs(self.work, exist_ok=True)
        self.gpu_dir = os.path.abspath(args.gpu_dir)
        self.py = args.python or sys.executable
        self.results = {"mode": "dry-run" if args.dry_run else "gpu", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "budget_s": self.budget, "stages": {}}
        self.env = dict(os.environ)
        self.env.setdefault("RUST_LOG", "info,sqlx=warn,mistralrs_core=info")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["NO_COLOR"] = "1"
        # No network there: never ask the hub; no progress bars in the logs.
        self.env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                         "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"})
        self.srlm = None
        self.srlm_env = self.env
        self.db = None
        self.pg = None
        self.server = None
        self.server_url = None
        self.model_a = self.model_b = None
        self.model_info = {}
        self.checkpoint_a = None
        self.mem = None
        self.baseline_mem = None
        self.one_model_mem = None
        self.gpu = False
        self.procs = []
        self.log_file = open(os.path.join(self.out, "check.log"), "a")
        self.stage_log = open(os.path.join(self.out, "stages.log"), "a")

    # -- logging and bookkeeping --
    def log(self, msg):
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def remaining(self):
        return self.deadline - time.time()

    def save(self):
        self.results["elapsed_s"] = round(time.time() - self.t0, 1)
        tmp = os.path.join(self.out, "results.json.part")
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=2, default=str)
        os.replace(tmp, os.path.join(self.out, "results.json"))

    def stage(self, name, need_s, fn, requires=()):
        if self.args.stages and name not in self.args.stages:
            return None
        if name in self.args.skip:
            self.results["stages"][name] = {"ok": None, "skipped": "--skip"}
            return None
        missing = [r for r in requires if not r[1]]
        if missing:
            reason = "needs " + ", ".join(r[0] for r in missing)
            self.log(f"== {name}: skipped ({reason})")
            self.results["stages"][name] = {"ok": None, "skipped": reason}
            self.save()
            return None
        if self.remaining() < need_s:
            reason = f"{self.remaining():.0f} s left of the budget, stage needs ~{need_s} s"
            self.log(f"== {name}: skipped ({reason})")
            self.results["stages"][name] = {"ok": None, "skipped": reason}
            self.save()
            return None
        self.log(f"== {name}")
        t = time.time()
        entry = {"ok": False}
        self.results["stages"][name] = entry
        try:
            data = fn() or {}
            entry.update(data)
            entry["ok"] = entry.get("ok", True) if "ok" in data else True
        except SkipStage as e:
            entry.update({"ok": None, "skipped": str(e)})
            self.log(f"   skipped: {e}")
        except KeyboardInterrupt:
            entry["error"] = "interrupted (SIGTERM or Ctrl-C)"
            entry["seconds"] = round(time.time() - t, 1)
            self.save()
            raise
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {e}"
            entry["traceback"] = traceback.format_exc()[-3000:]
            self.log(f"   FAILED: {entry['error']}")
        entry["seconds"] = round(time.time() - t, 1)
        self.log(f"   {name}: {'ok' if entry['ok'] else ('skipped' if entry['ok'] is None else 'FAILED')} in {entry['seconds']} s")
        self.save()
        return entry

    def run(self, name, argv, timeout, env=None, check=True, stdin=None):
        """Runs argv; stderr (and stdout) go to stages.log; returns stdout text."""
        timeout = max(5, min(timeout, self.remaining() - 5))
        if env is None and self.srlm and str(argv[0]) == self.srlm:
            env = self.srlm_env
        self.stage_log.write(f"\n===== {name} [{time.strftime('%H:%M:%S')}] $ {' '.join(map(str, argv))}\n")
        self.stage_log.flush()
        t = time.time()
        text = lambda x: x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
        try:
            p = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env or self.env, timeout=timeout, cwd=REPO, input=stdin)
        except subprocess.TimeoutExpired as e:
            self.stage_log.write(text(e.stderr) + text(e.stdout) + f"\n===== {name}: TIMEOUT after {timeout:.0f} s\n")
            self.stage_log.flush()
            raise RuntimeError(f"{name} timed out after {timeout:.0f} s")
        self.stage_log.write(p.stderr + p.stdout + f"\n===== {name}: exit {p.returncode} in {time.time() - t:.1f} s\n")
        self.stage_log.flush()
        if check and p.returncode != 0:
            tail = [l.strip()[-200:] for l in (p.stderr.strip().splitlines()[-3:] + p.stdout.strip().splitlines()[-2:]) if l.strip()]
            raise RuntimeError(f"{name} exited {p.returncode}: {' | '.join(tail)}")
        return p.stdout

    def mark(self):
        return time.time()

    def mem_peak_since(self, t0):
        if not self.mem:
            return None
        peak = self.mem.peak(t0)
        return peak

    # -- env --
    def s_env(self):
        info = {"python": sys.version.split()[0], "host_python_for_torch": self.py}
        smi = shutil.which("nvidia-smi")
        if smi:
            try:
                info["nvidia_smi"] = subprocess.run(
                    ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.mem,temperature.gpu",
                     "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
                smi_text = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
                self.stage_log.write("\n===== nvidia-smi\n" + smi_text)
                print(smi_text, flush=True)
            except Exception as e:
                info["nvidia_smi_error"] = str(e)
        else:
            info["nvidia_smi"] = None
        probe = ("import json, torch, transformers; d = torch.cuda.is_available(); "
                 "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'available': d, "
                 "'transformers': transformers.__version__, "
                 "'device': torch.cuda.get_device_name(0) if d else None, "
                 "'capability': list(torch.cuda.get_device_capability(0)) if d else None, "
                 "'memory_bytes': torch.cuda.get_device_properties(0).total_memory if d else None}))")
        try:
            info["torch"] = last_json(self.run("torch-probe", [self.py, "-c", probe], 120))
        except Exception as e:
            info["torch"] = {"error": str(e)}
        info["transformers"] = (info["torch"] or {}).get("transformers")
        self.gpu = bool(smi) and bool((info.get("torch") or {}).get("available"))
        info["gpu_visible"] = self.gpu
        self.results["env"] = info
        if self.gpu:
            self.mem = GpuMemory()
            time.sleep(0.5)
            self.baseline_mem = self.mem.now()
            info["baseline_used_gib"] = gib(self.baseline_mem)
            info["memory_source"] = self.mem.source
        else:
            banner = "NO GPU VISIBLE: " + ("nvidia-smi not found" if not smi else "torch.cuda.is_available() is False")
            self.log("*" * 72)
            self.log(banner)
            self.log("*" * 72)
            info["banner"] = banner
            if self.mode != "dry":
                info["ok"] = False
                info["error"] = banner
        if self.mode == "dry":
            self.cfg["device"] = "cuda" if self.gpu else "cpu"
        return info

    # -- srlm --
    def cuda_lib_dirs(self):
        code = ("import json, os, site, sys\n"
                "roots = []\n"
                "try:\n import nvidia; roots += list(nvidia.__path__)\nexcept Exception: pass\n"
                "for s in site.getsitepackages() + [site.getusersitepackages()]:\n"
                " p = os.path.join(s, 'nvidia')\n"
                " if os.path.isdir(p) and p not in roots: roots.append(p)\n"
                "dirs = []\n"
                "for r in roots:\n"
                " for d, _, files in os.walk(r):\n"
                "  if any(f.startswith('lib') and '.so' in f for f in files) and d not in dirs: dirs.append(d)\n"
                "try:\n import torch; dirs.append(os.path.join(os.path.dirname(torch.__file__), 'lib'))\nexcept Exception: pass\n"
                "print(json.dumps(dirs))\n")
        try:
            dirs = last_json(self.run("cuda-lib-dirs", [self.py, "-c", code], 120)) or []
        except Exception:
            dirs = []
        for d in ["/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/local/cuda/lib64"]:
            if os.path.isdir(d) and d not in dirs:
                dirs.append(d)
        return dirs

    def s_srlm(self):
        if self.args.srlm:
            path = os.path.abspath(self.args.srlm)
        else:
            cands = [p for ext in ("xz", "zst", "") for p in glob.glob(os.path.join(self.gpu_dir, "srlm" + ("." + ext if ext else "")))]
            if not cands:
                raise RuntimeError(f"no srlm binary in {self.gpu_dir} (srlm.xz, srlm.zst or srlm): run scripts/gpu/pack.sh")
            src = cands[0]
            path = os.path.join(self.work, "bin", "srlm")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            t = time.time()
            if src.endswith(".xz"):
                with lzma.open(src) as fin, open(path + ".part", "wb") as fout:
                    shutil.copyfileobj(fin, fout, 16 << 20)
            elif src.endswith(".zst"):
                if shutil.which("zstd"):
                    subprocess.run(["zstd", "-d", "-q", "-f", src, "-o", path + ".part"], check=True)
                else:
                    try:
                        import zstandard
                    except ImportError:
                        raise RuntimeError("srlm.zst needs zstd or the zstandard module; pack.sh writes srlm.xz (stdlib lzma) instead")
                    with open(src, "rb") as fin, open(path + ".part", "wb") as fout:
                        zstandard.ZstdDecompressor().copy_stream(fin, fout)
            else:
                shutil.copy(src, path + ".part")
            os.chmod(path + ".part", 0o755)
            os.replace(path + ".part", path)
            self.log(f"   decompressed {os.path.basename(src)} ({os.path.getsize(src) / 2**20:.1f} MiB) to {os.path.getsize(path) / 2**20:.1f} MiB in {time.time() - t:.1f} s")
        dirs = self.cuda_lib_dirs()
        # Only srlm's processes get the CUDA libraries' folders (Python's own must not).
        self.srlm_env = dict(self.env)
        self.srlm_env["LD_LIBRARY_PATH"] = ":".join(dirs + [p for p in self.env.get("LD_LIBRARY_PATH", "").split(":") if p])
        def run_ldd():
            try:
                return subprocess.run(["ldd", path], capture_output=True, text=True, env=self.srlm_env, timeout=30).stdout
            except (OSError, subprocess.SubprocessError) as e:
                return f"ldd unavailable: {e}"

        ldd = run_ldd()
        missing = sorted({line.split()[0] for line in ldd.splitlines() if "not found" in line})
        if missing:  # look for them (the driver's libcuda.so.1 above all) where drivers and toolkits keep them
            roots = ["/usr/local/nvidia"] + sorted(glob.glob("/usr/local/cuda*")) + ["/usr/lib", "/usr/lib64", "/opt"]
            hits = find_files(missing, roots, time.time() + 20)
            found = [hits[name] for name in missing if name in hits]
            if found:
                self.srlm_env["LD_LIBRARY_PATH"] = ":".join(dict.fromkeys(found)) + ":" + self.srlm_env["LD_LIBRARY_PATH"]
                dirs = list(dict.fromkeys(found)) + dirs
                ldd = run_ldd()
                missing = sorted({line.split()[0] for line in ldd.splitlines() if "not found" in line})
        cuda_libs = sorted({m.group(1) for m in re.finditer(r"^\s*(lib(?:cuda|cublas|cublasLt|curand|nvrtc|cudart|nccl)[^\s]*)", ldd, re.M)})
        self.stage_log.write("\n===== ldd srlm\n" + ldd)
        version = self.run("srlm --version", [path, "--version"], 30, env=self.srlm_env).strip().splitlines()[0]
        self.srlm = path
        return {"binary": path, "version": version, "cuda_libraries_linked": cuda_libs, "missing_libraries": missing,
                "ld_library_path": dirs, "ok": not missing}

    # -- postgres --
    def s_postgres(self):
        if self.args.database_url:
            self.db = self.args.database_url
            psql = shutil.which("psql")
            if not psql:
                raise RuntimeError("--database-url needs psql on the PATH")
            self.psql = lambda sql, timeout=60: self.run("psql", [psql, self.db, "-v", "ON_ERROR_STOP=1", "-tAc", sql], timeout).strip()
            version = self.psql("SHOW server_version")
            return {"database_url": self.db, "external": True, "server_version": version}
        tarball = os.path.join(self.gpu_dir, "pg.tar.xz")
        site = os.path.join(self.work, "pgsite")
        root = os.path.join(site, "pgserver", "pginstall")  # its binaries find libpq in site/pgserver.libs
        if not os.path.exists(os.path.join(root, "bin", "postgres")):
            wheels = glob.glob(os.path.join(self.gpu_dir, "whl", "pgserver-*.whl"))
            shutil.rmtree(site, ignore_errors=True)
            if os.path.exists(tarball):
                with tarfile.open(tarball) as tf:
                    try:
                        tf.extractall(site, filter="fully_trusted")
                    except TypeError:  # Python without extraction filters
                        tf.extractall(site)
            elif wheels:
                import zipfile
                with zipfile.ZipFile(wheels[0]) as z:
                    for info in z.infolist():
                        p = z.extract(info, site)
                        mode = (info.external_attr >> 16) & 0o777
                        if mode:
                            os.chmod(p, mode)
            else:
                raise RuntimeError(f"no {tarball} (or .gpu/whl/pgserver-*.whl): run scripts/gpu/pack.sh")
        bin_ = os.path.join(root, "bin")
        env = dict(self.env)
        env["LD_LIBRARY_PATH"] = os.path.join(root, "lib") + ":" + env.get("LD_LIBRARY_PATH", "")
        data = os.path.join(self.work, "pgdata")
        sock = os.path.join(self.work, "pgsock")
        port = free_port()
        shutil.rmtree(data, ignore_errors=True)
        os.makedirs(data)
        os.makedirs(sock, exist_ok=True)
        # initdb refuses to run as root: run the server as an existing unprivileged user.
        as_user = []
        if os.geteuid() == 0:
            uid, gid = self.unprivileged_user()
            for p in (data, sock):
                os.chown(p, uid, gid)
            for p in (self.work, site):
                os.chmod(p, 0o755)
            as_user = [sys.executable, "-c", "import os, sys; os.setgid(%d); os.setgroups([]); os.setuid(%d); os.execv(sys.argv[1], sys.argv[1:])" % (gid, uid)]
        self.run("initdb", as_user + [os.path.join(bin_, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"], 120, env=env)
        log = os.path.join(sock, "postgres.log")
        opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200"
        self.run("pg_ctl start", as_user + [os.path.join(bin_, "pg_ctl"), "-D", data, "-l", log, "-w", "-t", "60", "-o", opts, "start"], 90, env=env)
        self.pg = (as_user, os.path.join(bin_, "pg_ctl"), data, env)
        psql = os.path.join(bin_, "psql")
        self.run("createdb", [psql, "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "postgres", "-c", "CREATE DATABASE srlm"], 30, env=env)
        version = self.run("pg version", [psql, "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "srlm", "-tAc", "SHOW server_version"], 30, env=env).strip()
        self.db = f"postgres://postgres@127.0.0.1:{port}/srlm"
        self.psql = lambda sql, timeout=60: self.run("psql", [psql, "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "srlm", "-v", "ON_ERROR_STOP=1", "-tAc", sql], timeout, env=env).strip()
        return {"database_url": self.db, "server_version": version}

    def unprivileged_user(self):
        """(uid, gid) of nobody, daemon or postgres; else a user made with useradd."""
        import pwd
        for name in ("nobody", "daemon", "postgres"):
            try:
                pw = pwd.getpwnam(name)
                return pw.pw_uid, pw.pw_gid
            except KeyError:
                pass
        subprocess.run(["useradd", "--system", "--no-create-home", "srlmpg"], check=True, capture_output=True)
        pw = pwd.getpwnam("srlmpg")
        return pw.pw_uid, pw.pw_gid

    def stop_postgres(self):
        if self.pg:
            as_user, pg_ctl, data, env = self.pg
            try:
                subprocess.run(as_user + [pg_ctl, "-D", data, "-m", "immediate", "stop"], env=env, timeout=30,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except Exception:
                pass
            self.pg = None

    # -- model --
    def s_model(self):
        tok = os.path.join(self.gpu_dir, "tokenizer")
        if not os.path.exists(os.path.join(tok, "tokenizer.json")):
            raise RuntimeError(f"no {tok}/tokenizer.json: run scripts/gpu/pack.sh")
        path = lambda name: os.path.join(self.work, "models", f"llama-{self.cfg['shape']}-{name}")
        made_json = os.path.join(self.work, "models", f"made-{self.cfg['shape']}.json")
        if not self.args.fresh_models and os.path.exists(made_json):
            # A warm machine keeps /tmp between calls: reuse the models of an earlier run.
            out = json.load(open(made_json))
            if all(os.path.exists(os.path.join(out[n]["out"], "model.safetensors")) for n in ("a", "b")):
                self.log(f"   reusing the models of an earlier run ({made_json}; --fresh-models to remake)")
                return self.use_models(out, reused=True)
        for name in ("a", "b"):
            shutil.rmtree(path(name), ignore_errors=True)
        stdout = self.run("make models", [self.py, os.path.join(HERE, "make_model.py"), "--out", path("a"), "--tokenizer", tok,
                                          "--shape", self.cfg["shape"], "--seed", 1, "--sharpen-steps", self.cfg["sharpen"],
                                          "--also", path("b") + ":2", "--device", self.cfg["device"], "--repo", REPO], 360)
        made = [json.loads(l) for l in stdout.splitlines() if l.startswith("{")]
        out = {"a": made[0], "b": made[1]}
        for name in out:
            self.log(f"   model {name}: {json.dumps({k: v for k, v in out[name].items() if k != 'sharpen'})}")
        sh = out["a"].get("sharpen") or {}
        self.log(f"   sharpening kept step {sh.get('kept_step')}: {json.dumps(sh.get('kept'))}")
        with open(made_json, "w") as f:
            json.dump(out, f)
        return self.use_models(out)

    def use_models(self, out, reused=False):
        self.model_a = out["a"]["out"]
        self.model_b = out["b"]["out"]
        self.model_info = out["a"]
        cfg = json.load(open(os.path.join(self.model_a, "config.json")))
        head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
        self.model_info["kv_bytes_per_token"] = cfg["num_hidden_layers"] * 2 * cfg["num_key_value_heads"] * head_dim * 2
        return {"a": out["a"], "b": out["b"], "kv_bytes_per_token": self.model_info["kv_bytes_per_token"], "reused": reused}

    # -- server --
    def start_server(self, model):
        port = free_port()
        self.server_url = f"http://127.0.0.1:{port}"
        argv = [self.srlm, "serve", "--model", model, "--engine", self.args.engine, "--host", "127.0.0.1", "--port", str(port),
                "--database-url", self.db, "--admin-token", ADMIN_TOKEN, "--max-seqs", str(self.cfg["max_seqs"]),
                "--max-in-flight", "1024", "--shutdown-grace-secs", "5", "--request-timeout-secs", "300"]
        log = open(os.path.join(self.out, "serve.log"), "a")
        log.write(f"\n===== [{time.strftime('%H:%M:%S')}] $ {' '.join(argv)}\n")
        log.flush()
        self.server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.srlm_env, cwd=REPO, start_new_session=True)
        self.server_log = os.path.join(self.out, "serve.log")
        t = time.time()
        limit = min(300, self.remaining() - 10)
        while time.time() - t < limit:
            if self.server.poll() is not None:
                raise RuntimeError(f"srlm serve exited with {self.server.returncode} while loading (serve.log)")
            try:
                status, body = http("GET", self.server_url + "/ready", timeout=5)
                if status == 200:
                    return time.time() - t, body
            except Exception:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"srlm serve not ready after {limit:.0f} s (serve.log)")

    def stop_server(self):
        if self.server and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait(10)
        code = self.server.returncode if self.server else None
        self.server = None
        return code

    def server_mem(self):
        """(server process GPU bytes or None, total used bytes or None)."""
        if not self.mem:
            return None, None
        procs = self.mem.processes()
        own = procs.get(self.server.pid) if self.server else None
        return own, self.mem.now()

    def s_serve(self):
        t0 = self.mark()
        load_s, ready = self.start_server(self.model_a)
        status, models = http("GET", self.server_url + "/v1/models")
        self.checkpoint_a = ready.get("checkpoint_id")
        log = re.sub(r"\x1b\[[0-9;]*m", "", open(self.server_log, errors="replace").read())
        engine_lines = [l.strip()[-300:] for l in log.splitlines() if "engine loaded" in l or "PagedAttention" in l or "Using PagedAttention" in l or "device" in l.lower() and "loaded" in l]
        engine = models["data"][0].get("engine") if isinstance(models, dict) and models.get("data") else None
        own, used = self.server_mem()
        res = {"load_seconds": round(load_s, 1), "ready": ready, "engine": engine, "engine_log": engine_lines[-6:],
               "checkpoint_id": self.checkpoint_a, "server_gpu_gib": gib(own), "gpu_used_gib": gib(used)}
        if self.gpu and engine != "mistralrs":
            res["ok"] = False
            res["error"] = f"--engine {self.args.engine} on a GPU served with {engine}, not mistralrs"
        return res

    # -- correctness --
    def chat(self, prompt, max_tokens, n=1, timeout=300):
        body = {"model": "current", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                "temperature": 0, "n": n, "logprobs": True, "top_logprobs": 2, "seed": 0}
        status, r = http("POST", self.server_url + "/v1/chat/completions", body, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"chat HTTP {status}: {str(r)[:300]}")
        out = []
        for c in r["choices"]:
            toks = (c.get("logprobs") or {}).get("content") or []
            out.append({"text": c["message"]["content"] or "", "tokens": [(t["token"], t["logprob"], [x["logprob"] for x in t.get("top_logprobs", [])]) for t in toks]})
        return out

    @staticmethod
    def compare(solo, other):
        """Where `other` leaves `solo`: None if equal, else the first differing token,
        the solo top-2 gap there and the largest log-prob difference before it."""
        if solo["text"] == other["text"]:
            return None
        a, b = solo["tokens"], other["tokens"]
        i = 0
        noise = 0.0
        while i < min(len(a), len(b)) and a[i][0] == b[i][0]:
            noise = max(noise, abs(a[i][1] - b[i][1]))
            i += 1
        gap = None
        if i < len(a) and len(a[i][2]) >= 2:
            gap = a[i][2][0] - a[i][2][1]
        return {"at_token": i, "solo_len": len(a), "other_len": len(b), "solo_top2_gap": gap, "logprob_noise_before": noise,
                "solo": solo["text"][:80], "other": other["text"][:80]}

    def s_correctness(self):
        mt = self.cfg["correct_tokens"]
        prompts = CORRECTNESS_PROMPTS
        solo = [self.chat(p, mt)[0] for p in prompts]
        solo2 = [self.chat(p, mt)[0] for p in prompts]
        # Concurrently: every prompt twice, plus n=4 requests for two prompts, all at once.
        jobs = [(i, 1) for i in range(len(prompts))] * 2 + [(0, 4), (3, 4)]
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            futures = [pool.submit(self.chat, prompts[i], mt, n) for i, n in jobs]
            concurrent_out = [f.result() for f in futures]
        n4_alone = self.chat(prompts[1], mt, 4)
        checks = []  # (kind, prompt index, choices)
        for (i, n), choices in zip(jobs, concurrent_out):
            for c in choices:
                checks.append(("concurrent" if n == 1 else "concurrent n=4", i, c))
        for c in n4_alone:
            checks.append(("n=4 alone", 1, c))
        for i, c in enumerate(solo2):
            checks.append(("solo again", i, c))
        equal = 0
        diverged, crossed = [], []
        for kind, i, c in checks:
            d = self.compare(solo[i], c)
            if d is None:
                equal += 1
                continue
            d.update({"kind": kind, "prompt": i})
            # Another prompt's solo answer fits this answer better than its own: mixed up.
            own = d["at_token"]
            for j, s in enumerate(solo):
                if j != i:
                    dj = self.compare(s, c)
                    if dj is None or dj["at_token"] > max(own + 4, 8):
                        d["matches_prompt"] = j
                        crossed.append(d)
                        break
            diverged.append(d)
        near_tie = [d for d in diverged if d not in crossed and d["solo_top2_gap"] is not None
                    and d["solo_top2_gap"] <= max(0.05, 5 * d["logprob_noise_before"])]
        confident = [d for d in diverged if d not in crossed and d not in near_tie]
        distinct = len({s["text"] for s in solo})
        gaps = [t[2][0] - t[2][1] for s in solo for t in s["tokens"] if len(t[2]) >= 2]
        res = {"answers_checked": len(checks), "equal": equal, "diverged": len(diverged), "crossed": len(crossed),
               "near_tie_divergences": len(near_tie), "confident_divergences": len(confident),
               "distinct_solo_answers": distinct, "prompts": len(prompts), "max_tokens": mt,
               "solo_median_top2_gap": sorted(gaps)[len(gaps) // 2] if gaps else None,
               "solo_min_top2_gap": min(gaps) if gaps else None,
               "divergences": diverged[:12], "solo_answers": [s["text"][:120] for s in solo]}
        res["strict_equal"] = equal == len(checks)
        res["ok"] = not crossed and not confident
        if distinct < 2:
            res["warning"] = "every prompt got the same answer: mix-ups cannot be seen"
        return res

    # -- where the time goes under load --
    def s_profile(self):
        """Per-thread CPU of the server (from /proc, two readings 4 s apart) and the GPU's
        utilization while 32 greedy streams decode: a thread near 100 % with the GPU idle
        means decoding waits on one CPU thread."""
        c, tokens = 32, 96
        path = os.path.join(self.work, "bench-profile.json")
        argv = [self.srlm, "bench", "chat", "--url", self.server_url, "--concurrency", c, "--requests", c,
                "--max-tokens", tokens, "--temperature", "0", "--ignore-eos", "--time-limit-s", 60, "--label", "profile", "--out", path]
        since = self.log_offset()
        load = subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.srlm_env)
        try:
            time.sleep(3)
            pid = self.server.pid
            tick = os.sysconf("SC_CLK_TCK")

            def cpu_by_thread():
                out = {}
                for tid in os.listdir(f"/proc/{pid}/task"):
                    try:
                        name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
                        fields = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
                        out[tid] = (name, int(fields[11]) + int(fields[12]))
                    except OSError:
                        pass
                return out

            before, t0 = cpu_by_thread(), time.time()
            util = []
            for _ in range(4):
                try:
                    util.append(int(subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                                                   capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]))
                except Exception:
                    pass
                time.sleep(1)
            after, t1 = cpu_by_thread(), time.time()
            busy = []
            for tid, (name, ticks) in after.items():
                if tid in before:
                    busy.append((round(100.0 * (ticks - before[tid][1]) / tick / (t1 - t0), 1), name, tid))
            busy.sort(reverse=True)
            by_name = {}
            for pct, name, _ in busy:
                by_name[name] = round(by_name.get(name, 0.0) + pct, 1)
            load.wait(120)
        finally:
            if load.poll() is None:
                load.kill()
        bench = json.load(open(path))[0] if os.path.exists(path) else {}
        top = busy[:10]
        self.log("   busiest server threads (% of one core): " + ", ".join(f"{n} {p}" for p, n, _ in top[:6]))
        sched = self.scheduler_counts(since)
        self.log(f"   GPU utilization samples: {util}; c={c}: {bench.get('tokens_per_s', 0):.1f} tok/s; "
                 f"mistralrs running/waiting samples: {sched}")
        return {"threads": [{"name": n, "tid": t, "cpu_pct": p} for p, n, t in top], "cpu_pct_by_name": by_name,
                "total_cpu_pct": round(sum(p for p, _, _ in busy), 1), "gpu_util_pct": util,
                "tokens_per_s": bench.get("tokens_per_s"), "concurrency": c, "scheduler": sched}

    # -- serving throughput --
    def log_offset(self):
        try:
            return os.path.getsize(self.server_log)
        except (AttributeError, OSError):
            return 0

    def scheduler_counts(self, since):
        """mistralrs's own interval lines in serve.log after byte `since`: sequences running
        together and waiting, as its scheduler last left them (one sample per 5 s)."""
        try:
            with open(self.server_log, "rb") as f:
                f.seek(since)
                text = re.sub(r"\x1b\[[0-9;]*m", "", f.read().decode("utf-8", "replace"))
        except (AttributeError, OSError):
            return None
        rows = [(int(m.group(2)), int(m.group(3))) for m in SCHEDULER_LINE.finditer(text)]
        if not rows:
            return None
        running = sorted(r for r, _ in rows)
        return {"samples": len(rows), "running": [r for r, _ in rows][:24], "running_median": running[len(running) // 2],
                "running_max": running[-1], "waiting_max": max(w for _, w in rows)}

    def bench_level(self, c, requests, max_tokens, label, time_limit=240):
        path = os.path.join(self.work, f"bench-{label}-c{c}.json")
        since = self.log_offset()
        self.run(f"bench chat c={c}", [self.srlm, "bench", "chat", "--url", self.server_url, "--concurrency", c,
                                       "--requests", requests, "--max-tokens", max_tokens, "--temperature", "0", "--ignore-eos",
                                       "--time-limit-s", time_limit, "--label", label, "--out", path], time_limit + 60)
        result = json.load(open(path))[0]
        result["scheduler"] = self.scheduler_counts(since)
        return result

    def bw_fraction(self, tok_s, c, prompt_tokens=45, max_tokens=128):
        wb = self.model_info.get("weight_bytes")
        if not wb or not tok_s:
            return None
        steps = tok_s / c
        kv = c * (prompt_tokens + max_tokens / 2) * self.model_info.get("kv_bytes_per_token", 0)
        return {"weights_only": round(wb * steps / H200_BANDWIDTH, 4), "with_kv": round((wb + kv) * steps / H200_BANDWIDTH, 4)}

    def s_bench(self):
        mt = self.cfg["bench_tokens"]
        # Warm-up: a few requests at once (kernels, allocator).
        self.bench_level(min(8, max(self.cfg["levels"])), min(8, max(self.cfg["levels"])), min(16, mt), "warmup", 120)
        levels = []
        t0 = self.mark()
        for c, requests in self.cfg["levels"].items():
            t = self.mark()
            r = self.bench_level(c, requests, mt, "srlm")
            r["gpu_peak_gib"] = gib(self.mem_peak_since(t))
            r["bandwidth_fraction"] = self.bw_fraction(r["tokens_per_s"], c, max_tokens=mt)
            levels.append(r)
            sched = r["scheduler"] or {}
            self.log(f"   c={c}: {r['tokens_per_s']:.1f} tok/s, p50 {r['latency_p50_s']:.2f} s, p99 {r['latency_p99_s']:.2f} s, ttft p50 {r['ttft_p50_s']:.3f} s, errors {r['errors']}, "
                     f"mistralrs running (median/max of {sched.get('samples', 0)} samples) {sched.get('running_median')}/{sched.get('running_max')}")
        own, used = self.server_mem()
        self.one_model_mem = (own, used)
        return {"levels": levels, "max_tokens": mt, "server_gpu_gib_after": gib(own), "gpu_used_gib_after": gib(used),
                "ok": all(l["errors"] == 0 for l in levels)}

    # -- hot-swap --
    def s_hotswap(self):
        if self.one_model_mem is None:
            self.one_model_mem = self.server_mem()
        out = self.run("import B", [self.srlm, "checkpoints", "import", self.model_b, "--parent", self.checkpoint_a,
                                    "--name", "gpu-check-b", "--database-url", self.db], 120)
        imported = last_json(out)
        b = imported["id"] if isinstance(imported, dict) else int(out.strip().split()[-1])
        a = self.checkpoint_a
        # Long enough for both swaps to happen under load: each loads a model about as
        # fast as the server's start did.
        first_load = (self.results["stages"].get("serve") or {}).get("load_seconds") or 5
        load_s = int(max(self.cfg["swap_load_s"], 8 + 2 * (first_load + 3)))
        bench_path = os.path.join(self.work, "swap-bench.json")
        argv = [self.srlm, "bench", "chat", "--url", self.server_url, "--concurrency", self.cfg["swap_concurrency"],
                "--requests", 100000, "--max-tokens", self.cfg["swap_tokens"], "--temperature", "0.7",
                "--time-limit-s", load_s, "--label", "swap", "--out", bench_path]
        self.stage_log.write(f"\n===== swap load $ {' '.join(map(str, argv))}\n")
        self.stage_log.flush()
        t_start = self.mark()
        load = subprocess.Popen([str(x) for x in argv], stdout=self.stage_log, stderr=self.stage_log, env=self.srlm_env, cwd=REPO)
        swaps = []
        try:
            time.sleep(2)
            for target in (b, a):
                under_load = load.poll() is None
                t = time.time()
                status, body = http("POST", f"{self.server_url}/admin/checkpoints/{target}/activate", {}, timeout=300, token=ADMIN_TOKEN)
                wall = time.time() - t
                entry = {"to": target, "status": status, "wall_s": round(wall, 2), "under_load": under_load,
                         "load_seconds": body.get("load_seconds") if isinstance(body, dict) else None,
                         "model": body.get("model") if isinstance(body, dict) else str(body)[:200]}
                time.sleep(3)  # the old model's running requests finish; it is dropped
                own, used = self.server_mem()
                entry.update({"server_gpu_gib_3s_after": gib(own), "gpu_used_gib_3s_after": gib(used)})
                swaps.append(entry)
                self.log(f"   swap to {target}: HTTP {status}, {wall:.2f} s (load {entry['load_seconds']}), GPU {entry['gpu_used_gib_3s_after']} GiB")
                if status != 200:
                    break
        finally:
            try:
                load.wait(timeout=load_s + 120)
            except subprocess.TimeoutExpired:
                load.kill()
        peak = self.mem_peak_since(t_start)
        time.sleep(2)
        own, used = self.server_mem()
        bench = json.load(open(bench_path))[0] if os.path.exists(bench_path) else {}
        one_own, one_used = self.one_model_mem
        res = {"swaps": swaps, "load_seconds": load_s, "load_requests": bench.get("requests"), "failed_requests": bench.get("errors"),
               "load_tokens_per_s": bench.get("tokens_per_s"), "gpu_peak_gib": gib(peak),
               "one_model_server_gib": gib(one_own), "one_model_used_gib": gib(one_used),
               "after_server_gib": gib(own), "after_used_gib": gib(used)}
        base = self.baseline_mem or 0
        if one_used and used:
            res["after_over_one_model"] = round((used - base) / max(1, one_used - base), 3)
        if one_own and own:
            res["after_over_one_model_process"] = round(own / one_own, 3)
        ratio = res.get("after_over_one_model_process", res.get("after_over_one_model"))
        res["ok"] = (bench.get("errors") == 0 and len(swaps) == 2 and all(s["status"] == 200 for s in swaps)
                     and swaps[0]["under_load"] and (ratio is None or ratio <= 1.10))
        return res

    # -- pairs for srlm train dpo --
    def s_pairs(self):
        prompts = [p for p in BENCH_PROMPTS + CORRECTNESS_PROMPTS][: self.cfg["pairs_prompts"]]

        def one(i, p):
            body = {"prompt": p, "n": 2, "max_tokens": self.cfg["gen_tokens"], "temperature": 1.0, "seed": i,
                    "judge": {"samples": 1, "method": "expected", "max_tokens": self.cfg["judge_tokens"]}}
            try:
                status, r = http("POST", self.server_url + "/generate", body, timeout=300)
            except Exception as e:  # a dropped connection counts as a failed request
                return 0, False, f"{type(e).__name__}: {e}"
            return status, (r.get("pair") is not None) if isinstance(r, dict) else False, (str(r)[:200] if status != 200 else None)

        t = time.time()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda ip: one(*ip), enumerate(prompts)))
        statuses = [g[0] for g in got]
        pairs = self.psql(f"SELECT count(*) FROM pairs WHERE checkpoint_id = {int(self.checkpoint_a)} AND status = 'available'")
        res = {"requests": len(prompts), "http_200": statuses.count(200), "with_pair": sum(1 for g in got if g[1]),
               "available_pairs": int(pairs), "seconds_generating": round(time.time() - t, 1),
               "errors": [g[2] for g in got if g[2]][:3]}
        if int(pairs) < 2:
            res["sql_fallback"] = self.insert_pairs(8)
            res["available_pairs"] = int(self.psql(f"SELECT count(*) FROM pairs WHERE checkpoint_id = {int(self.checkpoint_a)} AND status = 'available'"))
        res["ok"] = res["available_pairs"] >= 2
        return res

    def insert_pairs(self, n):
        """Synthetic pairs straight into Postgres (when /generate made none)."""
        a = int(self.checkpoint_a)
        words = "the river carries small stones to the sea where they turn into sand over many years".split()
        sql = []
        for i in range(n):
            chosen = " ".join(words[(i + k) % len(words)] for k in range(90))
            rejected = " ".join(words[(i * 3 + k * 7) % len(words)] for k in range(90))
            msg = json.dumps([{"role": "user", "content": f"Question {i}: tell me about rivers and stones."}]).replace("'", "''")
            sql.append(f"""WITH p AS (INSERT INTO prompts (messages) VALUES ('{msg}'::jsonb) RETURNING id),
c AS (INSERT INTO candidates (prompt_id, checkpoint_id, choice_index, text, prompt_tokens, completion_tokens, finish_reason, temperature, top_p, max_tokens, seed)
      SELECT p.id, {a}, k, CASE k WHEN 0 THEN '{chosen}' ELSE '{rejected}' END, 20, 90, 'length', 0.7, 0.9, 128, {i}
      FROM p, generate_series(0, 1) k RETURNING id, prompt_id, choice_index)
INSERT INTO pairs (prompt_id, chosen_id, rejected_id, chosen_score, rejected_score, checkpoint_id)
SELECT c0.prompt_id, c0.id, c1.id, 4, 1, {a} FROM c c0 JOIN c c1 ON c0.choice_index = 0 AND c1.choice_index = 1;""")
        for s in sql:
            self.psql(s)
        return n

    # -- HF transformers anchor --
    def s_hf(self):
        levels = list(self.cfg["levels"].keys())
        path = os.path.join(self.work, "hf.json")
        self.run("hf bench", [self.py, os.path.join(HERE, "hf_bench.py"), "--model", self.model_a, "--levels", ",".join(map(str, levels)),
                              "--max-new-tokens", self.cfg["bench_tokens"], "--device", self.cfg["device"], "--out", path,
                              "--prompts", json.dumps(BENCH_PROMPTS)], 300)
        r = json.load(open(path))
        for l in r.get("levels", []):
            l["bandwidth_fraction"] = self.bw_fraction(l["tokens_per_s"], l["concurrency"], prompt_tokens=l.get("prompt_tokens_mean", 45), max_tokens=self.cfg["bench_tokens"])
            self.log(f"   HF c={l['concurrency']}: {l['tokens_per_s']:.1f} tok/s, latency {l['latency_s']:.2f} s, ttft {l['ttft_s']:.3f} s")
        return r

    # -- training --
    def s_train(self):
        tc = self.cfg["train"]
        res = {"settings": tc}
        common = ["--pairs", tc["pairs"], "--prompt-len", tc["prompt_len"], "--answer-len", tc["answer_len"],
                  "--batch-size", tc["batch_size"], "--micro-batch", tc["micro_batch"]]
        runs = [("srlm_full", "full"), ("srlm_lora", "lora"), ("torch_full", None), ("srlm_dpo_cli_lora", "cli")]
        for name, mode in runs:
            if self.remaining() < 45:
                res[name] = {"ok": None, "skipped": f"{self.remaining():.0f} s left"}
                continue
            t = self.mark()
            base = self.mem.now() if self.mem else None
            try:
                if mode in ("full", "lora"):
                    path = os.path.join(self.work, f"train-{mode}.json")
                    self.run(f"srlm bench train {mode}", [self.srlm, "bench", "train", "--model", self.model_a, "--mode", mode, "--out", path] + common, 240)
                    r = json.load(open(path))
                elif mode is None:
                    path = os.path.join(self.work, "train-torch.json")
                    self.run("torch dpo", [self.py, os.path.join(HERE, "torch_dpo.py"), "--model", self.model_a, "--device", self.cfg["device"], "--out", path] + common, 240)
                    r = json.load(open(path))
                else:
                    if not self.db or not self.checkpoint_a:
                        raise SkipStage("no database or checkpoint")
                    pairs = int(self.psql(f"SELECT count(*) FROM pairs WHERE checkpoint_id = {int(self.checkpoint_a)} AND status = 'available'"))
                    if pairs < 1:
                        raise SkipStage("no available pairs")
                    out_dir = os.path.join(self.work, "models", "dpo-lora")
                    shutil.rmtree(out_dir, ignore_errors=True)
                    t1 = time.time()
                    stdout = self.run("srlm train dpo", [self.srlm, "train", "dpo", "--database-url", self.db, "--checkpoint", self.checkpoint_a,
                                                         "--lora-rank", "16", "--max-pairs", min(pairs, 16), "--batch-size", min(pairs, 8),
                                                         "--micro-batch", min(pairs, tc["micro_batch"]), "--max-len", "512",
                                                         "--out", out_dir, "--no-announce"], 240)
                    summary = last_json(stdout) or {}
                    r = {"summary": summary, "wall_s": round(time.time() - t1, 1), "pairs": min(pairs, 16),
                         "tokens_per_second": summary.get("tokens_per_second"),
                         "train_tokens_per_second": (summary["tokens"] / summary["train_seconds"]) if summary.get("train_seconds") else None}
                    row = self.psql("SELECT row_to_json(t) FROM (SELECT id, status, examples, tokens, error, "
                                    "extract(epoch FROM finished_at - started_at) AS seconds FROM training_runs ORDER BY id DESC LIMIT 1) t")
                    r["training_run"] = json.loads(row) if row else None
                    r["ok"] = bool(r["training_run"] and r["training_run"].get("status") == "succeeded")
                peak = self.mem_peak_since(t)
                r["gpu_peak_gib"] = gib(peak)
                if peak is not None and base is not None:
                    r["gpu_peak_over_baseline_gib"] = gib(peak - base)
                r.setdefault("ok", True)
            except SkipStage as e:
                r = {"ok": None, "skipped": str(e)}
            except Exception as e:
                r = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            res[name] = r
            tps = r.get("tokens_per_second")
            self.log(f"   {name}: {'ok' if r.get('ok') else r.get('skipped') or r.get('error')}" + (f", {tps:.0f} tok/s" if tps else "")
                     + (f", GPU peak +{r.get('gpu_peak_over_baseline_gib')} GiB" if r.get("gpu_peak_over_baseline_gib") is not None else ""))
            self.save()
        res["ok"] = all(res[n].get("ok") is not False for n, _ in runs)
        return res

    # -- summary --
    def summary(self):
        S = self.results["stages"]
        env = self.results.get("env", {})
        lines = []
        gpu = env.get("nvidia_smi") or "no GPU"
        lines.append(f"srlm GPU check ({self.results['mode']}): {gpu}")
        m = self.model_info
        if m:
            sh = m.get("sharpen") or {}
            kept = sh.get("kept") or {}
            lines.append(f"model A: {m.get('shape')}, {m.get('parameters', 0) / 1e9:.3f} B params, {m.get('weight_bytes', 0) / 2**30:.2f} GiB {m.get('dtype')}; "
                         f"sharpened {sh.get('kept_step', 0)}/{sh.get('steps', 0)} steps (loss {(sh.get('first_loss') or 0):.2f} -> {(sh.get('last_loss') or 0):.2f}); "
                         f"probe: {kept.get('distinct')}/{kept.get('of')} distinct answers, {kept.get('near_ties_below_0.05')} of tokens near-ties")
        lines.append(f"{'stage':<12} {'status':<8} {'sec':>6}  result")

        def status(e):
            return "ok" if e.get("ok") else ("skipped" if e.get("ok") is None else "FAILED")

        def brief(name, e):
            if e.get("skipped"):
                return e["skipped"]
            if e.get("error") and not e.get("ok"):
                return e["error"][:110]
            if name == "srlm":
                return f"{e.get('version')}; missing libs: {e.get('missing_libraries') or 'none'}"
            if name == "postgres":
                return f"PostgreSQL {e.get('server_version', '?')}"
            if name == "model":
                if e.get("reused"):
                    return "A and B reused from an earlier run"
                return f"A and B written ({e.get('a', {}).get('seconds')} s, {e.get('b', {}).get('seconds')} s)"
            if name == "serve":
                return f"engine {e.get('engine')}, ready in {e.get('load_seconds')} s, server GPU {e.get('server_gpu_gib')} GiB (used {e.get('gpu_used_gib')})"
            if name == "correctness":
                return (f"{e.get('equal')}/{e.get('answers_checked')} equal to solo; crossed {e.get('crossed')}, "
                        f"near-tie {e.get('near_tie_divergences')}, confident {e.get('confident_divergences')}; {e.get('distinct_solo_answers')} distinct answers")
            if name == "bench":
                return "see serving table"
            if name == "hotswap":
                sw = ", ".join(f"{s.get('wall_s')} s" for s in e.get("swaps", []))
                return (f"{e.get('failed_requests')} failed of {e.get('load_requests')}; swaps {sw}; GPU after/one model "
                        f"{e.get('after_over_one_model_process', e.get('after_over_one_model'))}")
            if name == "pairs":
                return f"{e.get('available_pairs')} pairs available ({e.get('with_pair')}/{e.get('requests')} from /generate)"
            if name == "hf":
                return "see serving table"
            if name == "train":
                return "see training table"
            if name == "env":
                return env.get("banner") or f"torch {((env.get('torch') or {}).get('torch'))}, transformers {env.get('transformers')}"
            return ""

        for name in STAGES:
            if name in S:
                e = S[name]
                lines.append(f"{name:<12} {status(e):<8} {e.get('seconds', 0):>6}  {brief(name, e)}")
        bench = {l["concurrency"]: l for l in S.get("bench", {}).get("levels", [])}
        hf = {l["concurrency"]: l for l in S.get("hf", {}).get("levels", [])}
        if bench or hf:
            lines.append("")
            lines.append("serving (streamed chat, greedy, %s new tokens)" % self.cfg["bench_tokens"])
            lines.append(f"{'c':>3} {'srlm tok/s':>10} {'p50 s':>7} {'p99 s':>7} {'ttft50':>7} {'ttft99':>7} {'err':>4} | {'HF tok/s':>9} {'HF lat s':>8} {'HF ttft':>8} | {'x HF':>5} | {'BW srlm':>7} {'BW HF':>6}")
            for c in sorted(set(bench) | set(hf)):
                b, h = bench.get(c, {}), hf.get(c, {})
                ratio = (b.get("tokens_per_s") / h["tokens_per_s"]) if b.get("tokens_per_s") and h.get("tokens_per_s") else None
                f = lambda x, p=1: ("-" if x is None else f"{x:.{p}f}")
                bw = lambda r: f((r.get("bandwidth_fraction") or {}).get("weights_only"), 3)
                lines.append(f"{c:>3} {f(b.get('tokens_per_s')):>10} {f(b.get('latency_p50_s'), 2):>7} {f(b.get('latency_p99_s'), 2):>7} "
                             f"{f(b.get('ttft_p50_s'), 3):>7} {f(b.get('ttft_p99_s'), 3):>7} {b.get('errors', '-'):>4} | {f(h.get('tokens_per_s')):>9} "
                             f"{f(h.get('latency_s'), 2):>8} {f(h.get('ttft_s'), 3):>8} | {f(ratio, 2):>5} | {bw(b):>7} {bw(h):>6}")
            lines.append("BW = weight bytes read per decode step x steps/s / 4.8e12 (H200 datasheet)")
        tr = S.get("train", {})
        rows = [(k, tr[k]) for k in ("srlm_full", "srlm_lora", "torch_full", "srlm_dpo_cli_lora") if isinstance(tr.get(k), dict)]
        if rows:
            lines.append("")
            lines.append(f"training (DPO, {tr.get('settings')})")
            lines.append(f"{'run':<18} {'status':<8} {'tok/s':>9} {'train tok/s':>11} {'GPU peak GiB':>12} {'+baseline':>9}  note")
            for k, r in rows:
                note = r.get("skipped") or r.get("error") or r.get("engine") or r.get("note") or ""
                f = lambda x, p=0: ("-" if x is None else f"{x:.{p}f}")
                lines.append(f"{k:<18} {status(r):<8} {f(r.get('tokens_per_second')):>9} {f(r.get('train_tokens_per_second')):>11} "
                             f"{f(r.get('gpu_peak_gib'), 2):>12} {f(r.get('gpu_peak_over_baseline_gib'), 2):>9}  {str(note)[:60]}")
        targets = self.targets(bench, hf)
        if targets:
            self.results["targets"] = targets
            lines.append("")
            word = lambda met: "n/a" if met is None else ("MET" if met else "NOT MET")
            lines.append("issue 18 targets: " + "; ".join(f"{k}: {word(v['met'])} ({v['value']})" for k, v in targets.items()))
        failed = [n for n, e in S.items() if e.get("ok") is False]
        lines.append("")
        lines.append(f"elapsed {time.time() - self.t0:.0f} s of {self.budget} s budget; failed stages: {', '.join(failed) or 'none'}")
        text = "\n".join(lines)
        with open(os.path.join(self.out, "summary.txt"), "w") as f:
            f.write(text + "\n")
        return text, failed

    def targets(self, bench, hf):
        S = self.results["stages"]
        t = {}
        c = S.get("correctness")
        if c and c.get("answers_checked"):
            t["correctness (every concurrent answer = solo)"] = {"met": bool(c.get("strict_equal")), "value": f"{c.get('equal')}/{c.get('answers_checked')}"}
        if bench.get(32, {}).get("tokens_per_s") and hf.get(32, {}).get("tokens_per_s"):
            ratio = bench[32]["tokens_per_s"] / hf[32]["tokens_per_s"]
            t["serving c=32 >= 3x HF"] = {"met": ratio >= 3, "value": f"{ratio:.2f}x"}
        h = S.get("hotswap")
        if h and h.get("swaps"):
            ratio = h.get("after_over_one_model_process", h.get("after_over_one_model"))
            t["hot-swap 0 failed"] = {"met": h.get("failed_requests") == 0, "value": h.get("failed_requests")}
            t["hot-swap memory within 10%"] = {"met": None if ratio is None else ratio <= 1.10, "value": "not measured" if ratio is None else f"{ratio}x"}
        return t

    def main(self):
        code = 0
        try:
            self.stage("env", 0, self.s_env)
            if not self.gpu and self.mode != "dry":
                self.log("no GPU visible: stopping (run with --dry-run to test the plumbing on the CPU)")
                self.results["exit"] = "no GPU"
                code = 3
                return code
            self.stage("srlm", 5, self.s_srlm)
            self.stage("postgres", 5, self.s_postgres)
            self.stage("model", 30, self.s_model)
            have = lambda: [("srlm", self.srlm), ("postgres", self.db), ("model", self.model_a)]
            self.stage("serve", 30, self.s_serve, requires=have())
            up = lambda: have() + [("a running server", self.server is not None and self.server.poll() is None)]
            self.stage("correctness", 20, self.s_correctness, requires=up())
            self.stage("bench", 40, self.s_bench, requires=up())
            self.stage("profile", 25, self.s_profile, requires=up())
            self.stage("hotswap", 40, self.s_hotswap, requires=up() + [("checkpoint id", self.checkpoint_a)])
            self.stage("pairs", 20, self.s_pairs, requires=up() + [("checkpoint id", self.checkpoint_a)])
            if self.server and self.server.poll() is None:
                t = time.time()
                code_ = self.stop_server()
                self.results["stages"]["stop"] = {"ok": code_ in (0, -15), "exit_code": code_, "seconds": round(time.time() - t, 1)}
                self.save()
            self.stage("hf", 40, self.s_hf, requires=[("model", self.model_a)])
            self.stage("train", 60, self.s_train, requires=[("model", self.model_a)])
        except KeyboardInterrupt:
            self.log("interrupted")
            code = 130
        finally:
            try:
                self.stop_server()
            except Exception:
                pass
            self.stop_postgres()
            if self.mem:
                self.mem.stop_flag.set()
            text, failed = self.summary()
            self.save()
            print("\n" + text, flush=True)
        if code:
            return code
        if failed:
            return 1
        if not self.gpu:
            self.log("NO GPU VISIBLE: this was a CPU dry run; its stages passed (exit 3: no GPU)")
            return 3
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny model and counts; runs on the CPU when there is no GPU")
    ap.add_argument("--budget-s", type=float, default=None, help="overall time budget (default 510 on a GPU, 1800 dry)")
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(REPO, ".gpu-out"))
    ap.add_argument("--work", default="/tmp/srlm-gpu-check")
    ap.add_argument("--gpu-dir", default=os.path.join(REPO, ".gpu"))
    ap.add_argument("--srlm", help="use this srlm binary instead of .gpu/srlm.xz")
    ap.add_argument("--python", help="Python with torch and transformers (default: this one)")
    ap.add_argument("--database-url", help="use this Postgres instead of starting one")
    ap.add_argument("--engine", default="auto", choices=["auto", "mistralrs", "native"])
    ap.add_argument("--fresh-models", action="store_true", help="remake the models even if an earlier run left them")
    ap.add_argument("--stages", default="", help="only these stages (comma-separated; env is always run)")
    ap.add_argument("--skip", default="", help="skip these stages")
    args = ap.parse_args()
    args.stages = set(filter(None, args.stages.split(","))) | ({"env"} if args.stages else set())
    args.skip = set(filter(None, args.skip.split(",")))

    def terminate(signum, frame):  # an outer `timeout`: clean up (server, Postgres) and report
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    sys.exit(Check(args).main())


if __name__ == "__main__":
    main()
