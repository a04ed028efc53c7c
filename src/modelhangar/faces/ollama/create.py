"""`POST /api/create`: build an Ollama manifest from a base model and/or uploaded files."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from modelhangar.core import blob_access, jsonsafe
from modelhangar.core.digests import InvalidDigest, parse_digest
from modelhangar.core.errors import BlobUnknown, Denied, NotFound, QuotaExceeded, Refused
from modelhangar.core.gguf_info import config_for_model, stored_blob_metadata
from modelhangar.core.manifests import DOCKER_V2, OLLAMA_CONFIG, parse_manifest
from modelhangar.core.names import ModelName
from modelhangar.core.store import Actor, Store
from modelhangar.faces.ollama.wire import OllamaError, parse_or

MT = "application/vnd.ollama.image."
MODEL, ADAPTER, PROJECTOR = MT + "model", MT + "adapter", MT + "projector"
TEMPLATE, SYSTEM, PARAMS, MESSAGES, LICENSE = (
    MT + "template",
    MT + "system",
    MT + "params",
    MT + "messages",
    MT + "license",
)
REPLACED_BY_REQUEST = {"template": TEMPLATE, "system": SYSTEM, "messages": MESSAGES, "license": LICENSE}


@dataclass
class CreateRequest:
    """A validated create request (validation errors are answered before any streaming)."""

    name: ModelName
    base: ModelName | None
    files: dict[str, str]
    adapters: dict[str, str]
    body: dict[str, Any]

    def quantize_requested(self) -> bool:
        return bool(self.body.get("quantize") or self.body.get("quantization"))


@dataclass
class Build:
    statuses: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


def _file_map(body: dict[str, Any], key: str) -> dict[str, str]:
    raw = body.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise OllamaError(400, f"{key} must be an object of file name to digest")
    out: dict[str, str] = {}
    for fname, digest in raw.items():
        norm = posixpath.normpath(fname) if isinstance(fname, str) else ""
        if not fname or fname.startswith("/") or norm.startswith("..") or "\\" in fname or "\x00" in fname:
            raise OllamaError(400, "file path must be relative")
        if not isinstance(digest, str):
            raise OllamaError(400, "invalid digest format")
        try:
            out[fname] = str(parse_digest(digest))
        except InvalidDigest as e:
            raise OllamaError(400, "invalid digest format") from e
    return out


def _text_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    return len(json.dumps(value, separators=(",", ":")).encode())


def _check_texts(body: dict[str, Any], max_text: int) -> None:
    """Each text layer (system, template, every license, the messages) within HANGAR_MAX_TEXT."""
    for key in REPLACED_BY_REQUEST:
        value = body.get(key)
        items = value if key == "license" and isinstance(value, list) else [value]
        for item in items:
            if item is not None and _text_size(item) > max_text:
                raise OllamaError(413, f"{key} is larger than the {max_text}-byte limit (HANGAR_MAX_TEXT)")


def validate(body: dict[str, Any], max_text: int) -> CreateRequest:
    raw = body.get("model") or body.get("name")
    if not isinstance(raw, str) or not raw:
        raise OllamaError(400, "model is required")
    name = parse_or(raw, 400, "invalid model name")
    files, adapters = _file_map(body, "files"), _file_map(body, "adapters")
    base_raw = body.get("from")
    base = None
    if base_raw is not None:
        if not isinstance(base_raw, str) or not base_raw:
            raise OllamaError(400, "from must be a model name")
        base = parse_or(base_raw, 400, "invalid model name")
    for key in ("template", "system"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise OllamaError(400, f"{key} must be a string")
    if body.get("parameters") is not None and not isinstance(body["parameters"], dict):
        raise OllamaError(400, "parameters must be an object")
    if body.get("messages") is not None and not isinstance(body["messages"], list):
        raise OllamaError(400, "messages must be a list")
    lic = body.get("license")
    if lic is not None and not isinstance(lic, str | list):
        raise OllamaError(400, "license must be a string or a list of strings")
    _check_texts(body, max_text)
    return CreateRequest(name=name, base=base, files=files, adapters=adapters, body=body)


def _put_text_layer(store: Store, build: Build, media_type: str, data: bytes) -> None:
    commit = store.put_blob_bytes(data)
    verb = "creating new layer" if commit.created else "using existing layer"
    build.statuses.append({"status": f"{verb} {commit.digest}"})
    build.layers.append({"mediaType": media_type, "digest": commit.digest, "size": commit.size})


def _use_uploaded(store: Store, build: Build, digest: str, media_type: str, actor: Actor) -> Any:
    size = blob_access.reuse(store, actor, digest)
    if size is None:
        raise OllamaError(400, f"blob {digest} not found; upload it first with POST /api/blobs/{digest}")
    build.statuses.append({"status": f"using existing layer {digest}"})
    build.layers.append({"mediaType": media_type, "digest": digest, "size": size})
    # Only the architecture, parameter count and file type are needed: no array is read.
    return stored_blob_metadata(store.blobs, digest, size, max_array_len=0)


def build_model(
    store: Store, req: CreateRequest, actor: Actor | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Create the model; returns the status lines Ollama would stream and the manifest digest."""
    if req.quantize_requested():
        raise OllamaError(
            400, "quantization is not supported: modelhangar stores models, it does not convert them"
        )
    actor = actor or Actor()
    try:  # before any layer is written: the name must be the actor's to write (core/permissions.py)
        store.require_writable(actor, req.name.repository)
    except NotFound as e:
        raise OllamaError(403, f"{actor.name} may not change {req.name.display_shortest()}") from e
    except Denied as e:
        raise OllamaError(403, str(e)) from e
    build = Build()
    params: dict[str, Any] = {}
    if req.base is not None:
        base = store.get_tag(req.base.repository, req.base.tag, actor=actor)
        if base is None:
            raise OllamaError(404, f"model '{req.base.display_shortest()}' not found")
        raw = store.get_manifest(base.manifest_digest)
        if raw is None:  # deleted since we read its tag
            raise OllamaError(404, f"model '{req.base.display_shortest()}' not found")
        refs = parse_manifest(raw[0], raw[1])
        if refs.config is not None:
            build.config = jsonsafe.loads_as(store.read_blob(refs.config.digest, 1 << 20), dict, {})
        for layer in refs.layers:
            if layer.media_type == PARAMS:
                params = jsonsafe.loads_as(store.read_blob(layer.digest, 1 << 20), dict, {})
                continue
            build.layers.append(
                {
                    "mediaType": layer.media_type,
                    "digest": layer.digest,
                    "size": layer.size,
                    "from": req.base.display_shortest(),
                }
            )
            if store.reuse_blob(layer.digest) is None:
                raise OllamaError(
                    404, f"model '{req.base.display_shortest()}' is missing layer {layer.digest}"
                )
    elif not req.files:
        raise OllamaError(400, "neither 'from' or 'files' was specified")
    if req.files:
        build.statuses.append({"status": "parsing GGUF"})
        build.layers = [x for x in build.layers if x["mediaType"] not in (MODEL, PROJECTOR)]
        meta = None
        for i, digest in enumerate(req.files.values()):
            got = _use_uploaded(store, build, digest, MODEL if i == 0 else PROJECTOR, actor)
            if got is None:
                raise OllamaError(
                    400, "supplied file was not in GGUF format (safetensors conversion is not supported)"
                )
            meta = meta or got
        build.config = config_for_model(meta)
    if req.adapters:
        if len(req.adapters) > 1:
            raise OllamaError(400, "only one adapter is currently supported")
        build.layers = [x for x in build.layers if x["mediaType"] != ADAPTER]
        for digest in req.adapters.values():
            if _use_uploaded(store, build, digest, ADAPTER, actor) is None:
                raise OllamaError(400, "supplied file was not in GGUF format")
    body = req.body
    for key, media_type in REPLACED_BY_REQUEST.items():
        if body.get(key) is None:
            continue
        build.layers = [x for x in build.layers if x["mediaType"] != media_type]
        if key == "license":
            texts = body[key] if isinstance(body[key], list) else [body[key]]
            for text in texts:
                _put_text_layer(store, build, LICENSE, str(text).encode())
        elif key == "messages":
            _put_text_layer(store, build, MESSAGES, json.dumps(body[key], separators=(",", ":")).encode())
        else:
            _put_text_layer(store, build, media_type, body[key].encode())
    if body.get("parameters"):
        params = {**params, **body["parameters"]}
    if params:
        _put_text_layer(store, build, PARAMS, json.dumps(params, separators=(",", ":")).encode())
    if not build.config:
        build.config = config_for_model(None)
    cfg = store.put_blob_bytes(json.dumps(build.config, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_V2,
        "config": {"mediaType": OLLAMA_CONFIG, "digest": cfg.digest, "size": cfg.size},
        "layers": build.layers,
    }
    build.statuses.append({"status": "writing manifest"})
    content = json.dumps(manifest, separators=(",", ":")).encode() + b"\n"
    try:
        digest, _ = store.put_manifest(req.name.repository, req.name.tag, content, DOCKER_V2, actor=actor)
    except BlobUnknown as e:
        raise OllamaError(
            400, f"a layer was deleted while the model was being created, try again: {e}"
        ) from e
    except Refused as e:  # the name's current version is in use: it is not replaced
        raise OllamaError(409, str(e)) from e
    except Denied as e:
        raise OllamaError(403, str(e)) from e
    except QuotaExceeded as e:
        raise OllamaError(413, str(e)) from e
    build.statuses.append({"status": "success"})
    return build.statuses, digest
