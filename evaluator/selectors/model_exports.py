"""Reads of model exports: a finished export as a download (a GGUF file, or a merged folder zipped as it streams)."""

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils.text import slugify

from evaluator.artifacts import artifact_download_url, artifact_fetch, artifact_local, artifact_store, is_artifact
from evaluator.models import JobStatus, ModelExport
from evaluator.selectors.exports import ChunkSink

ZIP_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ExportDownload:
    """A finished export as a download: one file to send as it is, or a folder to send as a zip stream."""

    filename: str
    path: Path
    # Where the browser gets it instead, when the artifact store sends it (a presigned URL): the web process then
    # neither downloads nor streams the file.
    url: str | None = None

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()

    def zip_stream(self) -> Iterator[bytes]:
        """The folder as a stored (uncompressed: safetensors do not compress) zip, produced while it is sent, a
        megabyte at a time, without a copy on disk."""
        sink = ChunkSink()
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for file in sorted(path for path in self.path.rglob("*") if path.is_file()):
                name = f"{Path(self.filename).stem}/{file.relative_to(self.path).as_posix()}"
                with file.open("rb") as source, archive.open(name, "w", force_zip64=True) as target:
                    while chunk := source.read(ZIP_CHUNK_BYTES):
                        target.write(chunk)
                        yield sink.drain()
                yield sink.drain()
        yield sink.drain()


def model_export_download(*, export: ModelExport) -> ExportDownload | None:
    """What to send for `export`: None unless it succeeded and its file or folder is still in the exports folder
    (or, with an artifact store, published there: a GGUF file as a presigned URL, a merged folder fetched into
    this machine's artifacts folder first, to be zipped as it streams). Raises ArtifactUnavailable when the store
    cannot be reached."""
    if export.status != JobStatus.SUCCEEDED or not export.path:
        return None
    filename = _export_filename(export)
    # The path comes from the worker, but only what lies in the exports folder is ever sent.
    if is_artifact(export.path) and not export.path.startswith("exports/"):
        return None
    if is_artifact(export.path) and artifact_store() is not None:
        if export.kind != ModelExport.Kind.MERGED:
            url = artifact_download_url(export.path, filename=filename)
            return ExportDownload(filename=filename, path=artifact_local(export.path), url=url)
        artifact_fetch(export.path)
    path = artifact_local(export.path)
    exports = (Path(settings.ARTIFACTS_DIR) / "exports").resolve()
    if not path.resolve().is_relative_to(exports) or not path.exists():
        return None
    return ExportDownload(filename=filename, path=path)


def _export_filename(export: ModelExport) -> str:
    name = slugify(export.variant.name) or f"variant-{export.variant_id}"
    if export.kind == ModelExport.Kind.MERGED:
        return f"{name}-merged-bf16.zip"
    if export.kind == ModelExport.Kind.LORA_GGUF:
        return f"{name}-lora-{export.outtype}.gguf"
    return f"{name}-{export.outtype or 'bf16'}.gguf"
