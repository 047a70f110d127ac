"""Model weights: files with a recorded sha256, never code run from a download.

A weight source is a local path, any fsspec URL (``s3://``, ``https://``, ``file://``,
``memory://``...) or a Hugging Face reference ``hf://<org>/<repo>[@<revision>]/<path>``.
:func:`resolve` turns it into a local file and its sha256; :func:`load_state_dict` reads
safetensors, or PyTorch checkpoints through the weights-only unpickler, which builds tensors
and plain containers and refuses anything else. :func:`convert_lightning_checkpoint` writes
the compact safetensors file of a DiffFuSR training checkpoint's inference weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import posixpath
import re
import threading
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from pipeline.errors import WeightsError, reason
from pipeline.plain import plain

#: Where the inference weights of the DiffFuSR SR LightningModule live in its state dict: the
#: EMA U-Net, the RRDB spatial encoder, the MoCo query encoder and the noise-schedule buffers.
INFERENCE_PREFIXES = ("ema.", "encoder.", "E.encoder_q.", "diffusion.")
#: The ``format`` metadata entry of the files :func:`convert_lightning_checkpoint` writes.
FORMAT = "difffusr-sr"
#: Schedule buffers the sampler reads; a checkpoint without them is not a DiffFuSR SR model.
SCHEDULE_KEYS = tuple(
    f"diffusion.{name}"
    for name in (
        "alphas_cumprod",
        "sqrt_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
    )
)
#: ``hf://<org>/<repo>[@<revision>]/<path>``, the hub's own URI form (model repositories).
HF_REFERENCE = re.compile(r"hf://(?P<repo>[^/@]+/[^/@]+)(?:@(?P<revision>[^/@]+))?/(?P<path>[^@]+)")
#: Published Lightning checkpoints store hyper-parameters as ``easydict.EasyDict``. Its pickle
#: (a new object, dict items, then its ``__dict__``) rebuilds harmlessly as an OrderedDict,
#: the one allow-listed mapping that both accepts items and has a ``__dict__``.
EASYDICT = (OrderedDict, "easydict.EasyDict")
_CHUNK = 1 << 20


class Sha256Mismatch(WeightsError):
    """The file's sha256 is not the expected one."""

    def __init__(self, source: str, expected: str, actual: str) -> None:
        super().__init__(f"sha256 mismatch for {source}: expected {expected}, got {actual}")
        self.expected, self.actual = expected, actual


class HubUnreachable(WeightsError):
    """A hub file that is neither in the local hub cache nor fetchable now (``why`` says why)."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


class NotOnHub(WeightsError):
    """The hub answered that the repository, revision or file does not exist (or is gated)."""


@dataclass(frozen=True)
class LocalWeights:
    path: Path
    sha256: str


def shipped_weights(name: str) -> str:
    """The path of a weight file that ships inside the package (``pipeline/models/data``,
    each with its model card beside it)."""
    return str(resources.files("pipeline.models") / "data" / name)


def default_cache_dir() -> Path:
    """Downloaded weights: ``$S2SR_CACHE/weights``, else the user's cache directory."""
    if root := os.environ.get("S2SR_CACHE"):
        return Path(root) / "weights"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "s2sr" / "weights"


def resolve(
    source: str | Path, sha256: str | None = None, cache_dir: str | Path | None = None
) -> LocalWeights:
    """A local copy of ``source`` and its sha256, which must equal ``sha256`` when given.

    Local files are used in place. Remote files are fetched once per process (callers that
    resolve per block pay no network round trip); fsspec downloads are kept in the cache
    under their sha256, so a pinned file already there is never fetched again, whatever its
    source. Hub files stay in the hub's own cache.
    """
    source = str(source)
    expected = _check_hex(sha256)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = _local_path(source)
    if path is None:
        path = _cached(cache, expected, source)
    if path is None:
        path = _FETCHED[source, cache] = _fetch(source, cache)
    digest = file_sha256(path)
    if expected and digest != expected:
        raise Sha256Mismatch(source, expected, digest)
    return LocalWeights(path, digest)


_HASHES: dict[tuple[str, int, int], str] = {}
_FETCHED: dict[tuple[str, Path], Path] = {}


def file_sha256(path: str | Path) -> str:
    """Streaming sha256, remembered per (file, size, mtime) so a process hashes a file once."""
    key = _stat_key(path)
    if key not in _HASHES:
        _HASHES[key] = _hash(path)
    return _HASHES[key]


def _stat_key(path: str | Path) -> tuple[str, int, int]:
    stat = os.stat(path)
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def _hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_hex(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise WeightsError(f"not a sha256 (64 hex digits): {sha256!r}")
    return value


def _filesystem(source: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        return fsspec.core.url_to_fs(source)
    except Exception as err:  # unknown protocol, missing fsspec backend, bad options
        raise WeightsError(f"cannot open weights {source}: {reason(err)}") from None


def _local_path(source: str) -> Path | None:
    """The file a local path or ``file://`` URL names; None for remote sources."""
    if source.startswith("hf://"):
        return None
    fs, path = _filesystem(source)
    if not isinstance(fs, LocalFileSystem):
        return None
    if not Path(path).is_file():
        raise WeightsError(f"weights not found: {source}")
    return Path(path)


def _suffix(source: str) -> str:
    return Path(source.split("?")[0]).suffix


def _cached(cache: Path, sha256: str | None, source: str) -> Path | None:
    """A pinned file already in the cache, or this process's earlier fetch of ``source``."""
    if sha256:
        path = cache / f"{sha256}{_suffix(source)}"
        if path.is_file():
            return path
    path = _FETCHED.get((source, cache))
    return path if path is not None and path.is_file() else None


def _part(folder: Path) -> Path:
    """A new name in ``folder`` for a file that is renamed into place once complete."""
    return folder / f"{uuid.uuid4().hex}.part"


def _fetch(source: str, cache: Path) -> Path:
    if source.startswith("hf://"):
        return _from_hub(source)
    fs, path = _filesystem(source)
    return _download(fs, path, source, cache)


def _download(fs: fsspec.AbstractFileSystem, fs_path: str, source: str, cache: Path) -> Path:
    """Copy to ``<cache>/<sha256><suffix>`` through a temporary file and a rename."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsError(f"cannot create the weights cache {cache}: {reason(err)}") from None
    tmp = _part(cache)
    try:
        fs.get_file(fs_path, str(tmp))  # each filesystem's own transfer (streamed, multipart...)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        cause = err.__cause__  # fsspec's HTTP filesystem wraps connection failures
        if isinstance(err, FileNotFoundError) and cause is None:
            raise WeightsError(f"weights not found: {source}") from None
        raise WeightsError(f"cannot read weights {source}: {reason(cause or err)}") from None
    digest = _hash(tmp)
    path = cache / f"{digest}{_suffix(source)}"
    os.replace(tmp, path)
    _HASHES[_stat_key(path)] = digest
    return path


def _from_hub(source: str) -> Path:
    """The file from the Hugging Face hub's own cache, downloading it when online."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    match = HF_REFERENCE.fullmatch(source)
    if match is None:
        raise WeightsError(
            f"malformed Hugging Face reference {source}: "
            "expected hf://<org>/<repo>[@<revision>]/<path/in/repo>"
        )
    # huggingface_hub reads HF_HUB_OFFLINE and HF_ENDPOINT once, at import; honour them as
    # set now.
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {
        "1",
        "ON",
        "YES",
        "TRUE",
    }
    endpoint = (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
    revision = match["revision"] and unquote(match["revision"])
    try:
        return Path(
            hf_hub_download(
                match["repo"],
                match["path"],
                revision=revision,
                endpoint=endpoint,
                local_files_only=offline,
            )
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError) as err:
        why = "offline mode (HF_HUB_OFFLINE) is set" if offline else reason(_root_cause(err))
        raise HubUnreachable(
            f"cannot reach the Hugging Face hub for {source}: {why}; the file is not in the "
            "local hub cache (weights must be downloaded once while online, or given as a "
            "local path / fsspec URL)",
            why,
        ) from None
    except (
        RepositoryNotFoundError,
        RevisionNotFoundError,
        EntryNotFoundError,
        GatedRepoError,
    ) as err:
        raise NotOnHub(
            f"{source}: not on the Hugging Face hub or not accessible with your token "
            f"({type(err).__name__})"
        ) from None
    except Exception as err:  # other HTTP answers, malformed repo ids, network stacks
        raise WeightsError(f"Hugging Face hub error for {source}: {reason(err)}") from None


def sibling(source: str, relative: str) -> str | None:
    """The source of the file at ``relative`` (``hparams.yaml``, ``../hparams.yaml``) from the
    folder of ``source``, in the same form (path, URL, hub reference); None where there is no
    such folder (above a hub repository's root, or a URL with a query)."""
    if source.startswith("hf://"):
        match = HF_REFERENCE.fullmatch(source)
        if match is None:
            return None
        head = source[: match.start("path")]
        path = posixpath.normpath(posixpath.join(posixpath.dirname(match["path"]), relative))
        return None if path.startswith("..") else head + path
    if "://" in source:
        scheme, path = source.split("://", 1)
        if "?" in path or "/" not in path:
            return None
        return f"{scheme}://{posixpath.normpath(posixpath.join(posixpath.dirname(path), relative))}"
    return os.path.normpath(os.path.join(os.path.dirname(source), relative))


def _root_cause(err: BaseException) -> BaseException:
    while (inner := err.__cause__ or err.__context__) is not None:
        err = inner
    return err


def load_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a local weight file.

    safetensors: its header metadata, JSON objects and arrays decoded. A Lightning
    checkpoint: its ``state_dict`` and ``hyper_parameters`` as plain dicts. A raw state dict
    saved with ``torch.save``: itself, with empty metadata.
    """
    kind = _kind(path)
    if kind is None:
        raise WeightsError(f"{path}: not a safetensors file or PyTorch checkpoint")
    if kind == "safetensors":
        return _read_safetensors(path)
    checkpoint = read_checkpoint(path)
    if "state_dict" in checkpoint:
        return dict(checkpoint["state_dict"]), checkpoint.get("hyper_parameters") or {}
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return dict(checkpoint), {}
    raise WeightsError(f"{path}: a PyTorch file without a state dict")


_LOAD_LOCK = threading.Lock()  # safe_globals edits torch's process-wide allow-list


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A ``torch.save`` file through the weights-only unpickler, never executing code.

    Non-tensor values (hyper-parameters, loop and callback states) come back as plain dicts.
    """
    if _kind(path) != "torch":
        raise WeightsError(f"{path}: not a PyTorch checkpoint")
    try:
        with _LOAD_LOCK, torch.serialization.safe_globals([EASYDICT]):
            checkpoint = torch.load(
                path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
            )
    except pickle.UnpicklingError as err:
        raise WeightsError(f"{path}: refused to load: {_refusal(err)}") from None
    except Exception as err:  # truncated or corrupt archives
        why = reason(err).split(". ")[0]
        raise WeightsError(f"{path}: unreadable PyTorch checkpoint: {why}") from None
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(f"{path}: a PyTorch file without a state dict")
    return {k: v if k == "state_dict" else plain(v) for k, v in checkpoint.items()}


def _refusal(err: Exception) -> str:
    """The unpickler's reason, without its advice to load with ``weights_only=False``."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        line = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
    else:
        lines = [line.strip() for line in text.splitlines()[1:]]
        advice = ("(", "Please", "Check the documentation")
        line = next((x for x in lines if x and not x.startswith(advice)), reason(err))
    return line.split(" Please use")[0]


def _kind(path: str | Path) -> str | None:
    """ "safetensors" (a header length, then JSON), "torch" (a zip or a pickle), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as err:
        raise WeightsError(f"cannot read {path}: {reason(err)}") from None
    if head[8:] == b"{":
        return "safetensors"
    if head.startswith((b"PK\x03\x04", b"\x80")):
        if Path(path).suffix == ".safetensors":  # whoever named it so expects no pickle
            raise WeightsError(f"{path}: named .safetensors but holds a PyTorch pickle; refused")
        return "torch"
    return None


def _read_safetensors(
    path: str | Path, data: bool = True
) -> tuple[dict[str, torch.Tensor | tuple[int, ...]], dict[str, Any]]:
    """Tensors (or, without ``data``, only their shapes) and decoded metadata."""
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            read = f.get_tensor if data else (lambda k: tuple(f.get_slice(k).get_shape()))
            tensors = {k: read(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{path}: unreadable safetensors file: {reason(err)}") from None
    return tensors, {k: _decode(v) for k, v in metadata.items()}


def tensor_shapes(path: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, Any]]:
    """The shape of every tensor of a local weight file, and its metadata, as
    :func:`load_state_dict` gives them, without reading the tensors' data (a safetensors
    header; a PyTorch checkpoint memory-mapped)."""
    if _kind(path) == "safetensors":
        return _read_safetensors(path, data=False)
    state, metadata = load_state_dict(path)
    return {k: tuple(v.shape) for k, v in state.items()}, metadata


def header_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a safetensors file, checked as :func:`load_state_dict` checks
    the file; {} for a PyTorch checkpoint (whose hyper-parameters take reading it whole)."""
    return _read_safetensors(path, data=False)[1] if _kind(path) == "safetensors" else {}


def _decode(value: str) -> Any:
    """JSON objects and arrays decoded; every other entry stays the string it was written as."""
    if value.startswith(("{", "[")):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    return value


def convert_lightning_checkpoint(
    src: str | Path,
    dst: str | Path,
    *,
    sha256: str | None = None,
    prefixes: tuple[str, ...] = INFERENCE_PREFIXES,
) -> LocalWeights:
    """Write the inference weights of a DiffFuSR SR Lightning checkpoint as safetensors.

    ``src`` is any source :func:`resolve` accepts (pinned by ``sha256`` when given); ``dst`` a
    local path, written atomically. Keys keep their names, so one loader reads both files. A
    checkpoint trained without EMA contributes its ``model.`` U-Net under ``ema.``. The header
    records the network configuration, the source's sha256 and the training step.
    """
    if "://" in str(dst):
        raise WeightsError(f"the converted file must be a local path, not {dst}")
    source = resolve(src, sha256)
    checkpoint = read_checkpoint(source.path)
    state, config = _sr_parts(checkpoint, str(src))
    unet = "ema" if any(k.startswith("ema.") for k in state) else "model"
    if unet == "model":
        state = {("ema." + k[6:] if k.startswith("model.") else k): v for k, v in state.items()}
    kept = {k: v.contiguous() for k, v in state.items() if k.startswith(prefixes)}
    metadata = {
        "format": FORMAT,
        "config": json.dumps(config),
        "unet": unet,
        "source_sha256": source.sha256,
        "global_step": str(checkpoint.get("global_step", "")),
    }
    patch = (checkpoint.get("hyper_parameters") or {}).get("train", {}).get("patch")
    if patch:  # ours record it: the LR window the model learnt on is the one to sample with
        metadata["window"] = str(int(patch) // int(config["scale"]))
    return write_safetensors(kept, dst, metadata)


def write_safetensors(
    tensors: Mapping[str, torch.Tensor], dst: str | Path, metadata: Mapping[str, str]
) -> LocalWeights:
    """Write a local safetensors file atomically (a temporary file, then a rename)."""
    dst = Path(dst)
    tmp = _part(dst.parent)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        _save_sorted(tensors, tmp, metadata)
        os.replace(tmp, dst)
    except Exception as err:  # a full disk, or safetensors refusing a tensor
        tmp.unlink(missing_ok=True)
        raise WeightsError(f"cannot write {dst}: {reason(err)}") from None
    return LocalWeights(dst, file_sha256(dst))


def _save_sorted(
    tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str]
) -> None:
    """safetensors with its metadata in sorted order (the library's own order is random), so
    the same tensors and metadata always give the same bytes and the same sha256."""
    blob = memoryview(save(dict(tensors), metadata=dict(metadata)))
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(bytes(blob[8 : 8 + size]))
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # tensor data stays 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        f.write(blob[8 + size :])


def _sr_parts(checkpoint: dict[str, Any], src: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict and ``lit_model.args`` of a DiffFuSR SR checkpoint, or a clear refusal."""
    state = checkpoint.get("state_dict")
    args = _get(checkpoint, "hyper_parameters", "lit_model", "args")
    if not isinstance(state, Mapping) or not isinstance(args, dict):
        raise WeightsError(
            f"{src} is not a Lightning checkpoint of the DiffFuSR SR model "
            "(no state_dict or no hyper_parameters.lit_model.args)"
        )
    if missing := missing_sr_parts(state):
        raise WeightsError(f"{src} is not a DiffFuSR SR checkpoint: no {', '.join(missing)}")
    return dict(state), args


def missing_sr_parts(state: Mapping[str, object]) -> list[str]:
    """The parts of the DiffFuSR SR model a state dict (or its shapes) lacks (none for SR
    weights)."""
    needs = {
        "U-Net (ema./model.)": ("ema.", "model."),
        "encoder.": ("encoder.",),
        "E.encoder_q.": ("E.encoder_q.",),
    }
    missing = [
        name for name, starts in needs.items() if not any(k.startswith(starts) for k in state)
    ]
    return missing + [k for k in SCHEDULE_KEYS if k not in state]


def _get(tree: Any, *keys: str) -> Any:
    for key in keys:
        tree = tree.get(key) if isinstance(tree, Mapping) else None
    return tree
