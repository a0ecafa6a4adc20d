"""One builder per libvirt call: the value a plan prints is the value the adapter executes.

Pure (no libvirt import): requests in, ``LibvirtCall`` values out, with the XML documents they
send and an outline of each document made from the same element. ``adapters/libvirt.py`` runs
exactly these calls, resolving flag and constant names to libvirt's numbers.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from auditor.models import (
    Attach,
    BlockResize,
    BuildPool,
    Const,
    CreateVolume,
    DefinePool,
    DeleteVolume,
    Detach,
    DiskSpec,
    Download,
    LibvirtCall,
    PoolAction,
    PoolDefinition,
    PoolOp,
    RemoveMade,
    Request,
    ResizeVolume,
    SetAutostart,
    Upload,
    VolumeSpec,
    WipeVolume,
)

POOL_OPS: dict[PoolOp, tuple[str, tuple[str, ...] | None]] = {
    PoolOp.START: ("virStoragePoolCreate", ()),
    PoolOp.STOP: ("virStoragePoolDestroy", None),
    PoolOp.REFRESH: ("virStoragePoolRefresh", ()),
    PoolOp.DELETE: ("virStoragePoolDelete", ()),
    PoolOp.UNDEFINE: ("virStoragePoolUndefine", None),
}


def calls_for(request: Request) -> tuple[LibvirtCall, ...]:
    """The libvirt calls that carry out ``request``, in order."""
    match request:
        case DefinePool(spec):
            return (_document_call("virStoragePoolDefineXML", pool_xml(spec)),)
        case BuildPool(_, no_overwrite):
            build = _named(("VIR_STORAGE_POOL_BUILD_NO_OVERWRITE", no_overwrite))
            return (LibvirtCall("virStoragePoolBuild", flags=build),)
        case PoolAction(_, op):
            function, flags = POOL_OPS[op]
            return (LibvirtCall(function, flags=flags),)
        case SetAutostart(_, enabled):
            return (
                LibvirtCall("virStoragePoolSetAutostart", (("autostart", int(enabled)),), None),
            )
        case CreateVolume(spec):
            return (create_call(spec),)
        case Upload(spec, _):
            return create_call(spec), _stream_call("virStorageVolUpload", "UPLOAD")
        case Download():
            return (_stream_call("virStorageVolDownload", "DOWNLOAD"),)
        case _:
            return (_volume_or_domain_call(request),)


def _volume_or_domain_call(request: Request) -> LibvirtCall:
    match request:
        case ResizeVolume(_, _, capacity, allocate, shrink):
            flags = _named(
                ("VIR_STORAGE_VOL_RESIZE_ALLOCATE", allocate),
                ("VIR_STORAGE_VOL_RESIZE_SHRINK", shrink),
            )
            return LibvirtCall("virStorageVolResize", (("capacity", capacity),), flags)
        case BlockResize(domain, target, capacity):
            args = (("domain", domain), ("disk", target), ("size", capacity))
            return LibvirtCall("virDomainBlockResize", args, ("VIR_DOMAIN_BLOCK_RESIZE_BYTES",))
        case DeleteVolume() | RemoveMade():
            return LibvirtCall("virStorageVolDelete")
        case WipeVolume(_, _, algorithm):
            alg = Const(f"VIR_STORAGE_VOL_WIPE_ALG_{algorithm.upper()}")
            return LibvirtCall("virStorageVolWipePattern", (("algorithm", alg),))
        case Attach(disk):
            root = disk_xml(disk)
            return LibvirtCall(
                "virDomainAttachDeviceFlags", (("domain", disk.domain),), affect_flags(disk),
                ET.tostring(root, encoding="unicode"), outline(root),
            )  # fmt: skip
        case Detach(disk):
            which = (("domain", disk.domain), ("target", disk.target))
            return LibvirtCall("virDomainDetachDeviceFlags", which, affect_flags(disk))
    raise TypeError(f"no libvirt call for {request!r}")


def _named(*pairs: tuple[str, bool]) -> tuple[str, ...]:
    return tuple(name for name, on in pairs if on)


def _document_call(function: str, root: ET.Element, *args: tuple[str, str]) -> LibvirtCall:
    return LibvirtCall(function, args, (), ET.tostring(root, encoding="unicode"), outline(root))


def _stream_call(function: str, direction: str) -> LibvirtCall:
    flag = f"VIR_STORAGE_VOL_{direction}_SPARSE_STREAM"
    return LibvirtCall(function, (("offset", 0), ("length", 0)), (flag,))


def create_call(spec: VolumeSpec) -> LibvirtCall:
    """virStorageVolCreateXML, or virStorageVolCreateXMLFrom for a clone."""
    flags = _named(
        ("VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA", spec.prealloc_metadata),
        ("VIR_STORAGE_VOL_CREATE_REFLINK", spec.reflink),
    )
    root = volume_xml(spec)
    args: tuple[tuple[str, str], ...] = (("source", spec.source),) if spec.source else ()
    function = "virStorageVolCreateXMLFrom" if spec.source else "virStorageVolCreateXML"
    return LibvirtCall(function, args, flags, ET.tostring(root, encoding="unicode"), outline(root))


def affect_flags(disk: DiskSpec) -> tuple[str, ...]:
    """LIVE and/or CONFIG; neither is libvirt's CURRENT (live if running, else config)."""
    named = _named(("VIR_DOMAIN_AFFECT_LIVE", disk.live), ("VIR_DOMAIN_AFFECT_CONFIG", disk.config))
    return named or ("VIR_DOMAIN_AFFECT_CURRENT",)


def outline(root: ET.Element) -> str:
    """An XML document in words: ``<volume> name new.raw, capacity 1024, format type=raw``."""
    head = "<" + " ".join([root.tag, *(f"{k}={v!r}" for k, v in root.attrib.items())]) + ">"
    leaves = [_leaf(node, parent) for parent in root.iter() for node in parent if len(node) == 0]
    return " ".join([head, ", ".join(leaves)]) if leaves else head


def _leaf(node: ET.Element, parent: ET.Element) -> str:
    label = f"{parent.tag} {node.tag}" if parent.tag == "backingStore" else node.tag
    attrs = [f"{k}={v}" for k, v in node.attrib.items() if (k, v) != ("unit", "bytes")]
    value = node.text if node.text else " ".join(attrs)
    return f"{label} {value}"


def pool_xml(spec: PoolDefinition) -> ET.Element:
    root = ET.Element("pool", type=spec.type)
    ET.SubElement(root, "name").text = spec.name
    if spec.source_devices or spec.source_host or spec.source_path or spec.source_name:
        source = ET.SubElement(root, "source")
        for device in spec.source_devices:
            ET.SubElement(source, "device", path=device)
        if spec.source_host:
            ET.SubElement(source, "host", name=spec.source_host)
        if spec.source_path:
            ET.SubElement(source, "dir", path=spec.source_path)
        if spec.source_name:
            ET.SubElement(source, "name").text = spec.source_name
        if spec.source_format:
            ET.SubElement(source, "format", type=spec.source_format)
    ET.SubElement(ET.SubElement(root, "target"), "path").text = spec.target
    return root


def volume_xml(spec: VolumeSpec) -> ET.Element:
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = spec.name
    ET.SubElement(root, "capacity", unit="bytes").text = str(spec.capacity)
    if spec.allocation is not None:
        ET.SubElement(root, "allocation", unit="bytes").text = str(spec.allocation)
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", type=spec.format)
    if spec.format == "qcow2":
        ET.SubElement(target, "compat").text = "1.1"  # libvirt's default is the old 0.10
    if spec.backing:
        store = ET.SubElement(root, "backingStore")
        ET.SubElement(store, "path").text = spec.backing.path
        ET.SubElement(store, "format", type=spec.backing.format)
    return root


def disk_xml(disk: DiskSpec) -> ET.Element:
    node = ET.Element("disk", type="volume", device="disk")
    ET.SubElement(node, "driver", name="qemu", type=disk.format)
    ET.SubElement(node, "source", pool=disk.pool, volume=disk.volume)
    ET.SubElement(node, "target", dev=disk.target, bus=disk.bus)
    return node
