"""Reading what a stored manifest references (OCI / Docker v2 image manifests, indexes, Ollama's)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from modelhangar.core import jsonsafe
from modelhangar.core.digests import parse_digest
from modelhangar.core.errors import InvalidManifest

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OLLAMA_CONFIG = "application/vnd.docker.container.image.v1+json"
INDEX_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
MAX_MANIFEST_BYTES = 4 << 20
MAX_SIZE = (1 << 63) - 1
"""The largest size a descriptor may state (and a manifest's total): the catalog's BIGINT."""
# RFC 6838 type/subtype (with an optional +suffix), as the image spec requires of artifactType.
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class ManifestRefs:
    """What a manifest names: blobs (config first) and, for an index, child manifests."""

    media_type: str
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    children: tuple[Descriptor, ...] = field(default=())
    subject: Descriptor | None = None
    """The manifest this one refers to (OCI 1.1 `subject`): not a reference that holds it."""
    artifact_type: str | None = None
    """`artifactType`, else an image manifest's config media type (as the referrers API lists it)."""

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return ((self.config,) if self.config else ()) + self.layers

    @property
    def total_size(self) -> int:
        return sum(d.size for d in self.blobs) + sum(d.size for d in self.children)


def _descriptor(obj: object, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise InvalidManifest(f"{where}: descriptor is not an object")
    digest, size = obj.get("digest"), obj.get("size")
    if not isinstance(digest, str):
        raise InvalidManifest(f"{where}: missing digest")
    try:
        d = str(parse_digest(digest))
    except ValueError as e:
        raise InvalidManifest(
            f"{where}: invalid digest {digest[:100]!r}", reason=f"{where}: invalid digest"
        ) from e
    if not digest.startswith("sha256:"):
        raise InvalidManifest(f"{where}: digest must be sha256:<hex>")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SIZE:
        raise InvalidManifest(f"{where}: invalid size")
    media = obj.get("mediaType", "")
    return Descriptor(media_type=media if isinstance(media, str) else "", digest=d, size=size)


def parse_manifest(content: bytes, media_type: str | None = None) -> ManifestRefs:
    """Every digest a manifest names, validated; raises InvalidManifest on anything else."""
    if len(content) > MAX_MANIFEST_BYTES:
        raise InvalidManifest("manifest too large")
    try:
        doc = jsonsafe.loads(content)
    except jsonsafe.InvalidJSON as e:
        raise InvalidManifest(f"manifest is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise InvalidManifest("manifest is not a JSON object")
    if doc.get("schemaVersion") != 2:
        raise InvalidManifest("unsupported schemaVersion (want 2)")
    body_type = doc.get("mediaType")
    mt = body_type if isinstance(body_type, str) and body_type else (media_type or "")
    if not mt:
        mt = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media_type and body_type and media_type != body_type and media_type.split(";")[0] != body_type:
        raise InvalidManifest("mediaType in the body differs from Content-Type")
    subject = _descriptor(doc["subject"], "subject") if doc.get("subject") is not None else None
    declared = doc.get("artifactType")
    if not (isinstance(declared, str) and _MEDIA_TYPE.fullmatch(declared)):
        declared = None  # stored as sent, but not listed by a type that is no media type
    if "manifests" in doc or mt in INDEX_TYPES:
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise InvalidManifest("index without a manifests list")
        children = tuple(_descriptor(m, f"manifests[{i}]") for i, m in enumerate(items))
        return _checked(ManifestRefs(mt, None, (), children, subject, declared))
    config = _descriptor(doc.get("config"), "config")
    layers_doc = doc.get("layers", [])
    if not isinstance(layers_doc, list):
        raise InvalidManifest("layers is not a list")
    layers = tuple(_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers_doc))
    artifact_type = declared or config.media_type or None
    return _checked(ManifestRefs(mt, config, layers, (), subject, artifact_type))


def _checked(refs: ManifestRefs) -> ManifestRefs:
    if refs.total_size > MAX_SIZE:
        raise InvalidManifest("the sizes add up to more than a store can hold")
    return refs


def manifest_annotations(content: bytes) -> dict[str, str]:
    """A stored manifest's string annotations (for the referrers API)."""
    doc = json.loads(content)
    found = doc.get("annotations") if isinstance(doc, dict) else None
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, str)}
