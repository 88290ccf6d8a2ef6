"""Putting a rendered site in place: written beside the output folder, swapped in whole, the replaced site kept
as scratch for the next render (the spare) or deleted in the background."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import shutil
import threading
import uuid
from pathlib import Path

from atlas.errors import SiteRenderError
from atlas.site.marker import MARKER


def is_site(out: Path) -> bool:
    """Whether `out` holds a rendered site (a marker, or at least a map page)."""
    return (out / MARKER).is_file() or (out / "index.html").is_file()


def check_replaceable(out: Path) -> None:
    """Refuse to write over a file, or over a folder that holds anything but a rendered site."""
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not is_site(out)):
        raise SiteRenderError(
            f"{out} exists and is not a rendered atlas site; choose an empty or new output folder"
        )


def scratch_for(out: Path) -> Path:
    """Where a render of `out` writes before the swap: beside it, so the swap is a rename. Unique per call: a
    previous call's replaced site may still be being deleted under its scratch name."""
    return out.with_name(f"{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def spare_path(cache_dir: Path | None, out: Path) -> Path | None:
    """Where the site this render replaces is kept, as scratch for the next render of `out`: in the cache
    folder, so the output folder's parent holds nothing but the site (none without a cache folder)."""
    if cache_dir is None:
        return None
    return Path(cache_dir).resolve() / "site-spare" / hashlib.sha256(os.fsencode(str(out))).hexdigest()[:16]


def take_spare(spare: Path | None, tmp: Path) -> bool:
    """Move the spare site to `tmp` to render over it; False where there is none (or it lies on another
    filesystem), and `tmp` is then a new folder."""
    if spare is None:
        return False
    try:
        os.rename(spare, tmp)
    except OSError:
        return False
    return True


def swap_into_place(tmp: Path, out: Path, spare: Path | None = None) -> None:
    """Put the site in `tmp` at `out` in one step, and keep (or delete) the site it replaces."""
    if not out.exists():
        os.rename(tmp, out)
        return
    check_replaceable(out)
    if _exchange(tmp, out):
        retire(tmp, spare)  # tmp now holds the previous site
        return
    old = tmp.with_name(tmp.name + "-old")
    os.rename(out, old)
    os.rename(tmp, out)
    retire(old, spare)


def abandon(tmp: Path, spare: Path | None) -> None:
    """After a failed render: keep its half-written folder as the spare, where there is one (every render
    overwrites or prunes what a spare holds), else delete it."""
    if spare is not None:
        retire(tmp, spare)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def retire(old: Path, spare: Path | None) -> None:
    """Keep a replaced site as the next render's spare, or delete it where it cannot be kept. Spares of
    other output folders (an `out_dir` that has since changed) are deleted: one spare is enough."""
    if spare is not None:
        try:
            spare.parent.mkdir(parents=True, exist_ok=True)
            os.rename(old, spare)
        except OSError:  # another filesystem, or another render's spare already there
            pass
        else:
            for other in spare.parent.iterdir():
                if other.name != spare.name:
                    _discard(other)
            return
    _discard(old)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange)
    return rc == 0


_CLEANUPS: list[threading.Thread] = []


def _discard(old: Path) -> None:
    """Delete a replaced site in the background: freeing a large site's blocks takes seconds, and the new
    site is already in place. The thread is not a daemon, so the interpreter finishes it before exiting."""
    thread = threading.Thread(target=shutil.rmtree, args=(old,), kwargs={"ignore_errors": True},
                              name=f"delete {old.name}")
    thread.start()
    _CLEANUPS.append(thread)


def finish_cleanup() -> None:
    """Wait until every replaced site is deleted."""
    while _CLEANUPS:
        _CLEANUPS.pop().join()
