"""Artifacts (adapters, checkpoints, datasets, indexes, merged bases, exports, Q&A uploads) past one machine.

The database names an artifact by its path relative to the artifacts folder (`training-jobs/12-…/adapter`), so a
row means the same on every machine whatever its PREFLOOP_ARTIFACTS_DIR. Absolute paths and paths outside the
artifact areas (an adapter an admin registered by hand, a Hugging Face id) are used as they are.

Without PREFLOOP_ARTIFACT_STORE the artifacts folder is all there is (one machine, or one shared mount). With it
(`s3://bucket/prefix`, any S3-compatible server), a job writes its artifact locally as before, then
`artifact_publish` uploads it before the job is marked finished; `artifact_fetch` on another machine downloads it
into that machine's artifacts folder, which acts as its cache. The training library never sees any of this: it
reads and writes local folders.

Atomic and checked: the contents go up first and a manifest (every file's size and SHA-256) last, so an artifact
without its manifest was never published; a download lands in a temporary folder beside its place, is checked
against the manifest and only then renamed into place, so a cache holds whole artifacts or none. With
PREFLOOP_ARTIFACT_CACHE_GB the copies are kept within that size, least recently used out first
(`artifact_cache_trim`).

Run by hand: `python manage.py shell -c "from evaluator.artifacts import artifact_fetch; artifact_fetch('…')"`.
"""

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

# The top-level folders of the artifacts folder that jobs write: a relative path under one of them is an artifact.
ARTIFACT_AREAS = frozenset({"training-jobs", "collections", "merged", "exports", "qa-uploads"})
MANIFESTS = ".manifests"
SIDECAR_SUFFIX = ".manifest.json"
# Beside a copy: its download under way, an older copy it replaces, and a copy renamed aside for removal.
PARTIAL, OLDER, EVICTED = ".partial-", ".older-", ".evicted-"
HASH_CHUNK = 1 << 20


class ArtifactUnavailable(Exception):
    """An artifact that this machine does not have and cannot get: not published, or the store cannot be reached.
    The message says which, and is what a failed job shows."""


@dataclass(frozen=True)
class ArtifactStore:
    """Where artifacts are published: a bucket, a key prefix, and the endpoint of a server other than AWS."""

    bucket: str
    prefix: str
    endpoint_url: str | None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, relative: str) -> str:
        return "/".join(part for part in (self.prefix, relative) if part)

    def manifest_key(self, relative: str) -> str:
        return self.key(f"{MANIFESTS}/{relative}.json")


def artifact_store() -> ArtifactStore | None:
    """The configured store (PREFLOOP_ARTIFACT_STORE), or None: the artifacts folder alone."""
    url = settings.PREFLOOP_ARTIFACT_STORE
    if not url:
        return None
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return ArtifactStore(
        bucket=bucket, prefix=prefix.strip("/"), endpoint_url=settings.PREFLOOP_ARTIFACT_STORE_ENDPOINT or None
    )


def is_artifact(stored: str) -> bool:
    """Whether a stored path names an artifact (relative, under one of ARTIFACT_AREAS) rather than a path or a
    model id used as it is."""
    path = PurePosixPath(stored)
    return bool(stored) and not path.is_absolute() and path.parts[0] in ARTIFACT_AREAS and ".." not in path.parts


def artifact_name(path: Path | str) -> str:
    """The name the database keeps for a file or folder this machine wrote in its artifacts folder."""
    relative = Path(path).resolve().relative_to(Path(settings.ARTIFACTS_DIR).resolve()).as_posix()
    if not is_artifact(relative):
        raise ValueError(f"{path} is not in one of the artifact areas ({', '.join(sorted(ARTIFACT_AREAS))})")
    return relative


def artifact_local(stored: str) -> Path:
    """Where a stored artifact is (or would be) on this machine; a path that is no artifact, as it is."""
    return Path(settings.ARTIFACTS_DIR) / stored if is_artifact(stored) else Path(stored)


def artifact_publish(path: Path | str) -> str:
    """Publish a finished file or folder of this machine's artifacts folder; its stored name.

    Without a store there is nothing to do beyond naming it. With one, every file is uploaded, then the manifest:
    call it before the job that wrote the artifact is marked finished, so that whoever sees the job finished can
    fetch it.
    """
    path = Path(path)
    relative = artifact_name(path)
    store = artifact_store()
    if store is None:
        return relative
    if not path.exists():
        raise ArtifactUnavailable(f"{relative}: nothing to publish at {path}")
    files = sorted(item for item in path.rglob("*") if item.is_file()) if path.is_dir() else [path]
    entries = []
    with _reaching(store):
        client = _client(store)
        for file in files:
            inner = file.relative_to(path).as_posix() if path.is_dir() else ""
            client.upload_file(str(file), store.bucket, store.key(_joined(relative, inner)))
            entries.append({"path": inner, "size": file.stat().st_size, "sha256": _sha256(file)})
        body = json.dumps({"kind": "folder" if path.is_dir() else "file", "files": entries}, indent=1).encode()
        client.put_object(
            Bucket=store.bucket, Key=store.manifest_key(relative), Body=body, ContentType="application/json"
        )
    _sidecar(path).write_bytes(body)
    artifact_cache_trim()
    return relative


def artifact_unpublish(stored: str) -> None:
    """Delete a published artifact from the store (this machine's copy stays): a checkpoint that a newer one
    replaced, or one of a finished job. The manifest goes first, so that from then on nobody fetches a part of
    it; then its files. Nothing to do without a store, or for a name that is no artifact."""
    store = artifact_store()
    if store is None or not is_artifact(stored):
        return
    with _reaching(store):
        client = _client(store)
        client.delete_object(Bucket=store.bucket, Key=store.manifest_key(stored))
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=store.key(stored) + "/")
        for page in pages:
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:  # at most 1,000 a page, as many as one delete_objects takes
                client.delete_objects(Bucket=store.bucket, Delete={"Objects": keys, "Quiet": True})


def artifact_fetch(stored: str) -> Path:
    """The local path of a stored artifact, downloaded into this machine's artifacts folder first when a store is
    configured and this machine has no copy, or an older one (an index rebuilt since); a path that is no artifact,
    as it is.

    Raises ArtifactUnavailable, naming the artifact and the store, when it was never published or the store
    cannot be reached.
    """
    local = artifact_local(stored)
    store = artifact_store()
    # A copy without a sidecar was written here before a store was configured: this machine's own, used as it is.
    if not is_artifact(stored) or store is None or (local.exists() and not _sidecar(local).exists()):
        return local
    try:
        with _reaching(store):
            body = _manifest_body(store, stored)
    except ArtifactUnavailable as error:
        if not local.exists():
            raise
        # A copy this machine holds is better than none: the store is asked again at the next use.
        logger.warning("using the local copy of %s as it is: %s", stored, error)
        _used(local)
        return local
    if local.exists() and _sidecar(local).read_bytes() == body:
        _used(local)
        return local
    with _reaching(store):
        _download_into_place(store, stored, json.loads(body), local)
    _sidecar(local).write_bytes(body)
    artifact_cache_trim()
    return local


@dataclass(frozen=True)
class CachedCopy:
    """A published artifact's copy on this machine: its place, its size (from its manifest) and when it was last
    used (its sidecar's modification time, set again at every use)."""

    path: Path
    size: int
    used: float


def artifact_cache_trim() -> list[str]:
    """With a store and PREFLOOP_ARTIFACT_CACHE_GB set, remove the least recently used copies of published
    artifacts from this machine until the copies take no more than that; the names of those removed.

    Only published copies (with a sidecar manifest) are ever removed: what a job is still writing has none, and
    whatever is removed can be downloaded again. None used in the last PREFLOOP_ARTIFACT_CACHE_KEEP_MINUTES is
    removed, so a process that just fetched one can read it; the limit may then be passed for a while, and is
    logged. Run after every download and publish.

    What a process killed midway left behind goes too: a copy renamed aside for removal or replacement, and a
    download with no file written to for as long as a copy is kept (one still running writes all the time)."""
    limit = settings.PREFLOOP_ARTIFACT_CACHE_GB
    if not limit or artifact_store() is None:
        return []
    budget = int(limit * 2**30)
    kept_since = time.time() - settings.PREFLOOP_ARTIFACT_CACHE_KEEP_MINUTES * 60
    _leftovers_remove(kept_since)
    copies = sorted(cached_copies(), key=lambda copy: copy.used)
    total = sum(copy.size for copy in copies)
    removed = []
    for copy in copies:
        if total <= budget or copy.used > kept_since:  # the rest were used later still
            break
        _evict(copy.path)
        total -= copy.size
        removed.append(artifact_name(copy.path))
    if total > budget:
        logger.warning(
            "artifact copies take %d bytes, over PREFLOOP_ARTIFACT_CACHE_GB=%s: all in recent use", total, limit
        )
    return removed


def cached_copies() -> list[CachedCopy]:
    """Every published artifact this machine holds a copy of: those with a sidecar manifest beside them."""
    copies = []
    for sidecar in _in_areas(f".*{SIDECAR_SUFFIX}"):
        local = sidecar.with_name(sidecar.name.removeprefix(".").removesuffix(SIDECAR_SUFFIX))
        # A copy another process removes meanwhile, or an unreadable sidecar, is not counted.
        with suppress(OSError, ValueError, KeyError, TypeError):
            manifest = json.loads(sidecar.read_bytes())
            used = sidecar.stat().st_mtime
            if local.exists():
                size = sum(int(entry["size"]) for entry in manifest["files"])
                copies.append(CachedCopy(path=local, size=size, used=used))
    return copies


def _leftovers_remove(kept_since: float) -> None:
    """Remove what evictions and downloads of killed processes left in the artifact areas (see _evict and
    _download_into_place for the names)."""
    for leftover in _in_areas(f".*{EVICTED}*") + _in_areas(f".*{OLDER}*"):
        _remove(leftover)  # never read by anyone
    for leftover in _in_areas(f".*{PARTIAL}*"):
        with suppress(OSError):  # removed meanwhile by the process that wrote it
            if _last_written(leftover) < kept_since:
                _remove(leftover)


def _in_areas(pattern: str) -> list[Path]:
    """What matches `pattern` anywhere in the artifact areas; an area that changes under the walk (another
    process removing a folder) is looked at again next time."""
    root = Path(settings.ARTIFACTS_DIR)
    found: list[Path] = []
    for area in sorted(ARTIFACT_AREAS):
        with suppress(OSError):
            found.extend((root / area).rglob(pattern))
    return found


def _last_written(path: Path) -> float:
    """The latest modification time of a file, or of a folder and anything in it."""
    return max([path.stat().st_mtime, *(item.stat().st_mtime for item in path.rglob("*"))])


def _evict(local: Path) -> None:
    """Remove one copy: renamed aside first (one atomic step, after which a fetch downloads it anew, never reads
    half a copy), then its sidecar, then its files."""
    aside = local.parent / f".{local.name}{EVICTED}{uuid.uuid4().hex[:8]}"
    try:
        local.rename(aside)
    except OSError:  # gone already: another process evicted it
        return
    if not local.exists():  # unless a fetch put a new copy in place meanwhile, whose sidecar this is
        _sidecar(local).unlink(missing_ok=True)
    _remove(aside)


def _remove(path: Path) -> None:
    """A file or folder gone, whichever it is; nothing to do if it is gone already."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _used(local: Path) -> None:
    """Mark a copy as used now, for the least-recently-used order of artifact_cache_trim."""
    with suppress(OSError):
        os.utime(_sidecar(local))


def _download_into_place(store: ArtifactStore, stored: str, manifest: dict[str, Any], local: Path) -> None:
    """Download into a temporary sibling, check it, then rename it into place (an older copy moved aside first)."""
    staging = local.parent / f".{local.name}{PARTIAL}{uuid.uuid4().hex[:8]}"
    older = local.parent / f".{local.name}{OLDER}{uuid.uuid4().hex[:8]}"
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        _download(store, stored, manifest, staging)
        if local.exists():
            local.rename(older)
        try:
            staging.rename(local)
        except OSError:
            # Another process on this machine put the same artifact in place first: keep theirs.
            if not local.exists():
                raise
    finally:
        for leftover in (staging, older):
            _remove(leftover)


def model_source(stored: str) -> str:
    """What a model loader takes for a stored base model or adapter: a Hugging Face id or a path as it is, an
    artifact (a merged base, a trained adapter) as its local copy, fetched first when needed; "" stays ""."""
    return str(artifact_fetch(stored)) if is_artifact(stored) else stored


def artifact_download_url(stored: str, *, filename: str, expires: int = 3600) -> str | None:
    """A presigned URL a browser downloads a published file from (the store, not the web process, sends it);
    None without a store or for a path that is no artifact."""
    store = artifact_store()
    if store is None or not is_artifact(stored):
        return None
    with _reaching(store):
        _manifest_body(store, stored)
        url: str = _client(store).generate_presigned_url(
            "get_object",
            Params={
                "Bucket": store.bucket,
                "Key": store.key(stored),
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
            },
            ExpiresIn=expires,
        )
    return url


def _download(store: ArtifactStore, stored: str, manifest: dict[str, Any], staging: Path) -> None:
    """Every file of the manifest into `staging` (the file itself for a one-file artifact), each checked."""
    client = _client(store)
    if manifest["kind"] == "folder":
        staging.mkdir()
    for entry in manifest["files"]:
        target = staging / entry["path"] if entry["path"] else staging
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(store.bucket, store.key(_joined(stored, entry["path"])), str(target))
        size, digest = target.stat().st_size, _sha256(target)
        if (size, digest) != (entry["size"], entry["sha256"]):
            raise ArtifactUnavailable(
                f"{_joined(stored, entry['path'])} in {store.url} is damaged: {size} bytes with SHA-256 "
                f"{digest[:12]}…, its manifest says {entry['size']} bytes with {entry['sha256'][:12]}…"
            )


def _manifest_body(store: ArtifactStore, stored: str) -> bytes:
    from botocore.exceptions import ClientError

    try:
        body: bytes = _client(store).get_object(Bucket=store.bucket, Key=store.manifest_key(stored))["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NoSuchBucket"):
            raise ArtifactUnavailable(
                f"{stored} is not in the artifact store {store.url}: it was never published there, or was deleted "
                f"since (no manifest at {store.manifest_key(stored)}), and this machine has no copy in "
                f"{settings.ARTIFACTS_DIR}"
            ) from None
        raise
    return body


def _sidecar(local: Path) -> Path:
    """The manifest of the published copy this machine holds, beside it: what tells a copy is current."""
    return local.parent / f".{local.name}{SIDECAR_SUFFIX}"


@contextmanager
def _reaching(store: ArtifactStore) -> Iterator[None]:
    """Turns the store's transport and permission errors into ArtifactUnavailable, naming the store."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, S3UploadFailedError) as error:
        where = store.endpoint_url or "AWS"
        raise ArtifactUnavailable(f"the artifact store {store.url} at {where} failed: {error}") from error


@cache
def _client(store: ArtifactStore) -> Any:
    """One S3 client per store and process (boto3 clients are thread-safe). Short connect timeouts and few
    retries: a store that cannot be reached fails the job in seconds, saying so, rather than hanging it."""
    import boto3
    from botocore.config import Config

    # Signature version 4 throughout: presigned URLs default to version 2, which servers other than AWS refuse.
    config = Config(
        connect_timeout=5,
        read_timeout=120,
        retries={"max_attempts": 3, "mode": "standard"},
        signature_version="s3v4",
    )
    return boto3.client("s3", endpoint_url=store.endpoint_url, config=config)


def _joined(relative: str, inner: str) -> str:
    return f"{relative}/{inner}" if inner else relative


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
