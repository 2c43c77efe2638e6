"""Where a figure came from: code version, package versions, hardware and the hash of the config.

Every record in the results store carries these, so a number can be traced to the exact code and
settings that produced it. All functions are cheap (one ``git`` call at most) and import nothing heavy:
torch is only *asked* for the GPU name when the caller has already imported it, because importing
torch costs seconds in every small process that writes a record.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import HarnessError

UNKNOWN = "unknown"
ABSENT = "absent"

# Distributions whose versions move numbers; always reported ('absent' when not installed).
REQUIRED_PACKAGES = ("torch", "numpy", "pycocotools", "xtcocotools")
# Reported only when installed: they shape the pipeline but are not needed everywhere.
OPTIONAL_PACKAGES = ("torchvision", "scipy", "pandas", "pyarrow", "snakemake", "faster-coco-eval")


def _git(args: list[str], cwd: Path) -> str | None:
    """Output of ``git <args>`` run in ``cwd`` (stripped), or None when git fails or is missing."""
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def code_version(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Git state of the checkout holding ``path`` (default: this package's own source).

    Returns ``{'commit': <40-hex or 'unknown'>, 'dirty': bool | None, 'describe': str}``.
    ``dirty`` counts modified, staged and untracked (not ignored) files, since untracked source is
    code that ran too; it is None when the state cannot be known (no git, not a checkout).
    A checkout with no commit yet has commit 'unknown' but a known dirty flag.
    """
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    if not cwd.is_dir():
        cwd = cwd.parent
    if _git(["rev-parse", "--is-inside-work-tree"], cwd) != "true":
        return {"commit": UNKNOWN, "dirty": None, "describe": UNKNOWN}
    commit = _git(["rev-parse", "--verify", "--quiet", "HEAD"], cwd) or UNKNOWN
    status = _git(["status", "--porcelain", "--untracked-files=normal"], cwd)
    dirty = None if status is None else bool(status)
    describe = _git(["describe", "--always", "--dirty", "--tags"], cwd) or UNKNOWN
    return {"commit": commit, "dirty": dirty, "describe": describe}


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ABSENT


def package_versions() -> dict[str, str]:
    """``{'python': '3.11.7', 'torch': '2.x' | 'absent', ...}`` from installed metadata (no imports).

    Keys: ``python``, every name in :data:`REQUIRED_PACKAGES` (``'absent'`` when missing), and each
    name in :data:`OPTIONAL_PACKAGES` that is installed.
    """
    versions = {"python": platform.python_version()}
    for name in REQUIRED_PACKAGES:
        versions[name] = _version(name)
    for name in OPTIONAL_PACKAGES:
        found = _version(name)
        if found != ABSENT:
            versions[name] = found
    return versions


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                # x86 says 'model name'; some ARM kernels only give 'Hardware' or 'Processor'.
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _gpu() -> dict[str, Any] | None:
    """Name and count of CUDA devices, asked of torch only if this process already imported it."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        return {"name": torch.cuda.get_device_name(torch.cuda.current_device()),
                "count": int(torch.cuda.device_count())}
    except Exception:  # a broken driver must not stop a record from being written
        return None


def hardware() -> dict[str, Any]:
    """``{'cpu': model, 'cores': logical CPUs, 'usable_cores': affinity, 'memory_gib': float | None,
    'machine': 'x86_64', 'system': 'Linux', 'gpu': {'name', 'count'} | None}``."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": _memory_gib(),
        "machine": platform.machine(),
        "system": platform.system(),
        "gpu": _gpu(),
    }


def hardware_summary(hw: dict[str, Any]) -> str:
    """One line for tables: ``'<cpu> x<cores>'`` plus ``' + <count>x <gpu>'`` when there is one."""
    text = f"{hw.get('cpu', UNKNOWN)} x{hw.get('cores', '?')}"
    gpu = hw.get("gpu")
    if isinstance(gpu, dict) and gpu.get("name"):
        text += f" + {gpu.get('count', 1)}x {gpu['name']}"
    return text


def canonical_config(cfg: Any) -> Any:
    """``cfg`` as it reads back from JSON (tuples become lists, keys become strings).

    Hashing this form makes the hash of a config identical before and after it is stored.
    Raises :class:`HarnessError` for values JSON cannot hold (NaN, objects, paths).
    """
    try:
        return json.loads(json.dumps(cfg, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise HarnessError(f"config is not plain JSON data: {exc}") from None


def config_hash(cfg: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``cfg``: sorted keys, no whitespace, UTF-8.

    Key order and tuple-vs-list do not change the hash; any value change does.
    """
    text = json.dumps(canonical_config(cfg), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def provenance(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{'code': code_version(path), 'versions': package_versions(), 'hardware': hardware()}``."""
    return {"code": code_version(path), "versions": package_versions(), "hardware": hardware()}
