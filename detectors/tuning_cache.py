"""The engine's measured strategy choices, kept on disk so that a restart skips the measuring.

Which gradient strategy wins depends on the model, the input size, the options, the device and
the machine (cores, threads, torch build), so the cache key is all of them: a choice measured on
another machine, or for other weights, is never read. One small JSON file per key; writes go
to a temporary file first, so a crash mid-write leaves the old file or none, never half of one.
A file that cannot be read is treated as absent (it is only a cache).
"""

import hashlib
import json
import logging
import os
import platform
import tempfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


def default_directory() -> Path:
    """``$XDG_CACHE_HOME/gga-serve/tuning`` (``~/.cache/gga-serve/tuning`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gga-serve" / "tuning"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_signature(device: torch.device) -> dict[str, object]:
    """What makes a timing from this machine comparable: device, CPU, threads, torch build."""
    signature: dict[str, object] = {
        "device": str(device),
        "cpu": _cpu_name(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        signature["gpu"] = torch.cuda.get_device_name(device)
    return signature


class TuningCache:
    """Strategy choices per (model, input size, options, machine) in one folder.

    Args:
        directory: where the files go (created on the first write).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @staticmethod
    def key(
        weights_sha256: str,
        input_shape: tuple[int, ...],
        options: dict[str, object],
        device: torch.device,
        memory_budget: int,
    ) -> str:
        """A digest of everything the measured choices depend on."""
        identity = {
            "format": FORMAT_VERSION,
            "weights": weights_sha256,
            "input_shape": list(input_shape),
            "options": options,
            "memory_budget": memory_budget,  # bounds the rows a widened pass may take
            "machine": machine_signature(device),
        }
        text = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def read(self, key: str) -> dict[int, dict[str, object]]:
        """The buckets measured under ``key`` (empty if none, or if the file is unusable)."""
        path = self._path(key)
        try:
            data = json.loads(path.read_text())
            return {int(b): dict(entry) for b, entry in data["buckets"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            logger.warning("tuning cache %s is unusable and is ignored: %s", path, err)
            return {}

    def write(self, key: str, record: dict[int, dict[str, object]]) -> None:
        """Replace the file of ``key`` with ``record`` atomically; a failure is only logged."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            data = {"format": FORMAT_VERSION, "buckets": {str(b): e for b, e in record.items()}}
            with tempfile.NamedTemporaryFile(
                "w", dir=self.directory, suffix=".tmp", delete=False
            ) as tmp:
                json.dump(data, tmp, indent=1)
            os.replace(tmp.name, self._path(key))
        except OSError as err:
            logger.warning("tuning cache %s cannot be written: %s", self.directory, err)
