"""Plans for moving data between a volume and a local file: upload, download."""

from __future__ import annotations

import os
import secrets

from auditor.errors import NotFound, OperationError, PolicyError
from auditor.models import Download, Upload, VolumeSpec
from auditor.ops.guards import check_fresh_name, names
from auditor.ops.plan import Action, Change, Figure, Plan
from auditor.ops.view import Context, View
from auditor.ops.volumes import NewVolume, plan_new_volume
from auditor.units import human, iec


def plan_upload(ctx: Context, pool: str, name: str, file: str, *, force: bool = False) -> Plan:
    """A new volume holding ``file``, sent as a sparse stream: holes stay holes."""
    ctx.view.active_pool(pool)
    check_fresh_name(ctx.view, pool, name)
    path = os.path.abspath(file)
    found = ctx.probes.fs.regular_file(path)
    if found is None:
        raise NotFound(f"{path}: No such file or directory")
    size, data = found
    if size == 0:
        raise PolicyError(f"{file} is empty", "nothing to upload")
    virtual, fmt = size, "raw"
    for _, res in ctx.probes.images([(path, None)]):
        if not isinstance(res, Exception):
            virtual, fmt = res.virtual_size, res.format
    notes = []
    if fmt != "raw":
        notes.append(
            f"the file is a {fmt} image of {human(virtual)} virtual size; libvirt detects the "
            "format from the content once the upload is done"
        )
    spec = VolumeSpec(pool, name, size, "raw", 0)
    summary = (
        f"create volume {pool}/{name} ({human(size)}, sparse) and upload {file} into it as a "
        f"sparse stream ({human(data)} of data; holes stay holes)"
    )
    new = NewVolume(
        Action.VOL_UPLOAD, spec, summary, virtual, data, data, f"the {iec(data)} of data in {file}",
        notes, Upload(spec, path), transfer=size,
    )  # fmt: skip
    return plan_new_volume(ctx, new, force=force)


def plan_download(
    ctx: Context, pool: str, name: str, file: str, *, overwrite: bool = False
) -> Plan:
    """Copy a volume's content into a local file, holes kept (sparse stream). The data goes
    to a new file beside FILE and replaces it only once complete."""
    r = ctx.view.volume(pool, name)
    path = os.path.abspath(file)
    _not_an_image(ctx.view, path)
    before = ctx.probes.fs.regular_file(path, follow=False)
    if before is not None and not overwrite:
        raise OperationError(f"{path} already exists", "choose another file or pass --overwrite")
    notes: list[str] = []
    users = ctx.view.users(r)
    if users.running:
        notes.append(
            f"in use by running domain(s) {names(users.running)}: the copy is at best "
            "crash-consistent"
        )
    fs = ctx.probes.fs.filesystem(os.path.dirname(path))
    if fs is not None and (r.disk.disk_size or 0) > fs.usable:
        notes.append(
            f"the volume holds up to {human(r.disk.disk_size)} of data and {fs.mount_point} has "
            f"{human(fs.usable)} free: the download may run out of space (FILE is then left "
            "as it was)"
        )
    size = r.disk.physical or r.disk.virtual_size
    folder, base = os.path.split(path)
    temp = os.path.join(folder, f".{base}.auditor-{secrets.token_hex(4)}")
    subject, request = f"{pool}/{name}", Download(pool, name, path, overwrite, temp)
    return Plan(
        action=Action.VOL_DOWNLOAD,
        subject=subject,
        summary=f"download volume {subject} into {path} as a sparse stream (holes stay holes)"
        + (", replacing the file once the copy is complete" if before else ""),
        request=request,
        calls=ctx.calls(request),
        transfer=size,
        changes=(
            Change(Figure.FILE_SIZE, before[0] if before else None, size),
            Change(Figure.FILE_DATA, before[1] if before else None, None),
        ),
        notes=tuple(notes),
        confirm=f"the current content of {path}" if before else "",
        pool=pool,
        volume=name,
    )


def _not_an_image(view: View, path: str) -> None:
    """Refuse a download over a volume's or a domain disk's own file."""
    real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    images = {r.disk.path for r in view.summary.disks if r.disk.host == view.host}
    images |= {dd.path for d in view.inventory.domains for dd in d.disks if dd.path}
    for p in (path, real):
        if p in images:
            raise OperationError(
                f"{path} is the image of a volume or a domain disk", "download to another file"
            )
