"""Bring existing mail into a space's archive from mbox or .eml files, deduplicated exactly like fetching."""
import os
import re
import uuid
from pathlib import Path

from flask import current_app
from sqlalchemy import select

from webapp.archive import ingest
from webapp.archive.models import ArchiveImport
from webapp.archive.reading import NO_FINAL_NEWLINE
from webapp.errors import UserError
from webapp.extensions import db
from webapp.jobs import IMPORT_ARCHIVE, JobRun, start_job

BATCH = 500  # messages a commit, as fetching does
_QUOTED_FROM = re.compile(rb"^>+From ")


class UploadError(UserError):
    """An upload that cannot be imported, said in words the uploader can act on."""


def upload_dir() -> Path:
    path = Path(current_app.instance_path) / "imports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_import(space, files, user) -> JobRun:
    """Save the uploads and queue one import job for them; the caller commits."""
    files = [f for f in files if f and f.filename]
    if not files:
        raise UploadError("Choose an mbox file or one or more .eml files.")
    run = start_job("import", IMPORT_ARCHIVE, user=user)
    for upload in files:
        path = upload_dir() / f"{uuid.uuid4().hex}.upload"
        upload.save(path)
        db.session.add(ArchiveImport(job_run_id=run.id, space_id=space.id, filename=upload.filename[:255],
                                     path=str(path)))
    return run


def _messages(path: str):
    """Each message's bytes as the file holds them (mboxrd unquoted); the dedupe key, not the bytes, makes a
    fetched and an imported copy of one message the same."""
    with open(path, "rb") as f:
        if f.read(5) != b"From ":
            f.seek(0)
            yield f.read()
            return
        f.seek(0)
        lines: list[bytes] = []
        trimmed = False  # the From_ line said the message had no final line break
        for line in f:  # streamed line by line: an mbox of any size never sits in memory whole
            if _separates(line, lines):
                if lines:
                    yield _unquote(lines, trimmed)
                lines, trimmed = [], line.rstrip(b"\r\n").endswith(NO_FINAL_NEWLINE)
                continue
            lines.append(line)
        if lines:
            yield _unquote(lines, trimmed)


def _separates(line: bytes, lines: list[bytes]) -> bool:
    """A From_ line at the start, or after a blank line: a new message (mboxrd)."""
    return line.startswith(b"From ") and (not lines or lines[-1] in (b"\n", b"\r\n"))


def _unquote(lines: list[bytes], trimmed: bool = False) -> bytes:
    """mboxrd: one '>' comes off every '>From ' line; the separator's blank line is not part of the message, nor
    the line break an export added to a message that had none."""
    if lines and lines[-1] in (b"\n", b"\r\n"):
        lines = lines[:-1]
    body = b"".join(line[1:] if _QUOTED_FROM.match(line) else line for line in lines)
    if trimmed and body.endswith(b"\n"):
        body = body[:-1]
    return body


def count_messages(path: str) -> int:
    """Messages in the file by the same separators the import reads (not every line starting "From ")."""
    with open(path, "rb") as f:
        if f.read(5) != b"From ":
            return 1
        f.seek(0)
        count, previous = 0, b""
        for line in f:
            if line.startswith(b"From ") and (count == 0 or previous in (b"\n", b"\r\n")):
                count += 1
            previous = line
        return count


def _batches(messages):
    """Groups of BATCH messages, or fewer when they pass 32 MB."""
    batch, size = [], 0
    for raw in messages:
        batch.append(raw)
        size += len(raw)
        if len(batch) >= BATCH or size > 32 * 1024 * 1024:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def run_import(run: JobRun) -> None:
    """Import every file of `run`, committing every BATCH messages so progress shows and nothing is redone."""
    files = list(db.session.scalars(select(ArchiveImport).where(ArchiveImport.job_run_id == run.id)))
    run.total = sum(count_messages(f.path) for f in files if os.path.exists(f.path))
    db.session.commit()
    for item in files:
        if not os.path.exists(item.path):
            continue
        for batch, prepared in ingest.ahead(_batches(_messages(item.path))):  # the next batch parsed meanwhile
            results = ingest.store_batch(item.space_id, None, batch, prepared)
            item.imported += sum(created for _, created in results)
            item.duplicates += sum(not created for _, created in results)
            run.done_count += len(results)
            db.session.commit()
        os.unlink(item.path)
    imported = sum(f.imported for f in files)
    duplicates = sum(f.duplicates for f in files)
    run.message = f"Imported {imported} message{'' if imported == 1 else 's'}" + (
        f"; {duplicates} {'was' if duplicates == 1 else 'were'} already in the archive." if duplicates else ".")
