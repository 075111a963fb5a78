"""Unpack a downloaded model archive by what its bytes are, not what its name says.

Together's download is a zstd-compressed tar (its docs: "This command will download ZSTD
compressed weights of the model. To extract the weights, run `tar -xf filename`"); gzip tars and
zip files are handled the same way. Extraction refuses members that would land outside the
destination (tarfile's "data" filter), and a single top-level folder is flattened so the adapter's
files sit directly in `dest` (what `PeftModel.from_pretrained(dest)` expects).
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

from ftplan.sizing.errors import FtplanError

MAGIC = {b"\x28\xb5\x2f\xfd": "zstd", b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip"}


def kind(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(512)
    for magic, name in MAGIC.items():
        if head.startswith(magic):
            return name
    if head[257:262] == b"ustar":
        return "tar"
    return "unknown"


def _extract_tar(fileobj, dest: Path) -> None:
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            try:
                member = tarfile.data_filter(member, str(dest))
            except tarfile.FilterError as exc:
                raise FtplanError(f"the archive has an unsafe member ({exc}); not unpacked.") from None
            tar.extract(member, dest, filter="fully_trusted")


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack `archive` into `dest` (replacing what was there); returns `dest`."""
    what = kind(archive)
    tmp = dest.with_name(dest.name + ".unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if what == "zstd":
            import zstandard

            with archive.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
                _extract_tar(stream, tmp)
        elif what in ("gzip", "tar"):
            with archive.open("rb") as raw:
                _extract_tar(raw, tmp)
        elif what == "zip":
            with zipfile.ZipFile(archive) as z:
                for name in z.namelist():
                    if Path(name).is_absolute() or ".." in Path(name).parts:
                        raise FtplanError(f"the archive has an unsafe member ({name}); not unpacked.")
                z.extractall(tmp)
        else:
            raise FtplanError(f"{archive} is not an archive ftplan knows (zstd or gzip tar, zip); it is kept as is.")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FtplanError(f"{archive} could not be unpacked ({type(exc).__name__}: {exc}); the download may be "
                          "incomplete.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    entries = list(tmp.iterdir())
    root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
    shutil.rmtree(dest, ignore_errors=True)
    root.replace(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest
