"""Reading what a stored manifest references (OCI / Docker v2 image manifests, indexes, Ollama's)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from modelhangar.core.digests import parse_digest
from modelhangar.core.errors import InvalidManifest

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OLLAMA_CONFIG = "application/vnd.docker.container.image.v1+json"
INDEX_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
MAX_MANIFEST_BYTES = 4 << 20


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
        raise InvalidManifest(f"{where}: invalid digest {digest!r}") from e
    if not digest.startswith("sha256:"):
        raise InvalidManifest(f"{where}: digest must be sha256:<hex>")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidManifest(f"{where}: invalid size")
    media = obj.get("mediaType", "")
    return Descriptor(media_type=media if isinstance(media, str) else "", digest=d, size=size)


def parse_manifest(content: bytes, media_type: str | None = None) -> ManifestRefs:
    """Every digest a manifest names, validated; raises InvalidManifest on anything else."""
    if len(content) > MAX_MANIFEST_BYTES:
        raise InvalidManifest("manifest too large")
    try:
        doc = json.loads(content)
    except (ValueError, UnicodeDecodeError) as e:
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
    if "manifests" in doc or mt in INDEX_TYPES:
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise InvalidManifest("index without a manifests list")
        children = tuple(_descriptor(m, f"manifests[{i}]") for i, m in enumerate(items))
        return ManifestRefs(media_type=mt, config=None, layers=(), children=children)
    config = _descriptor(doc.get("config"), "config")
    layers_doc = doc.get("layers", [])
    if not isinstance(layers_doc, list):
        raise InvalidManifest("layers is not a list")
    layers = tuple(_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers_doc))
    return ManifestRefs(media_type=mt, config=config, layers=layers)
