"""Tables of the catalog. Changes go through an Alembic migration in `migrations/versions/`.

Reference graph (what keeps what alive):
  tag -> manifest (within a repository), repo_manifest (membership) -> manifest,
  trash entry -> manifest, parent manifest (index) -> child manifest,
  manifest -> blob (manifest_blobs).
A manifest row exists only while something holds it; a blob file is deleted only when no
manifest_blobs row names it (see `core/store.py` for the locking protocol). A repository's blob
links (repo_blobs) make a blob visible there but do not keep it alive: they go with its row.
Times are POSIX seconds (float) so SQLite and PostgreSQL compare them alike.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

DIGEST = sa.String(71)

repositories = sa.Table(
    "repositories",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(1024), nullable=False, unique=True),
    sa.Column("name_key", sa.String(1024), nullable=False, unique=True),
    # The principal (user or organisation) that owns it; None: the local admin (models stored before
    # accounts, or made without a token). See `core/permissions.py`.
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # 'public' (everyone may read) or 'private' (only the owner, its members and admins).
    sa.Column("visibility", sa.String(16), nullable=False, server_default="public"),
    # What made it, when a face keeps a model object of its own (Replicate's models, OpenSearch's
    # groups): such a repository outlives its last version. None: an ordinary registry repository.
    sa.Column("kind", sa.String(32), nullable=True),
    # That face's fields of the model (description, hardware, ...), as JSON text.
    sa.Column("meta", sa.Text, nullable=True),
    # What the web UI's list sorts by, kept by every writer (`core/repo_figures.py`): the bytes of the
    # distinct blobs its manifests name, when its newest tag changed (else when it was made), and how
    # many manifests it holds (the list shows a repository holding one, or a face's model object).
    sa.Column("size", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("versions", sa.Integer, nullable=False, server_default="0"),
    sa.Column("modified_at", sa.Float, nullable=False, server_default="0"),
    sa.Index("ix_repositories_owner", "owner"),
    # A face's model objects newest first, a page at a time (Replicate's `GET /v1/models`).
    sa.Index("ix_repositories_kind_created", "kind", "created_at", "id"),
)
# The web UI's list a page at a time, largest or newest first, ties by name (`core/browse.py`).
sa.Index("ix_repositories_size", repositories.c.size.desc(), repositories.c.name_key)
sa.Index("ix_repositories_modified", repositories.c.modified_at.desc(), repositories.c.name_key)
# The registry's catalog a page at a time in byte order, as the OCI spec's `last` and Python sort
# (`Store.repository_keys`): on PostgreSQL that is collation "C", which the unique index on the key (in
# the database's collation) cannot serve; SQLite compares bytes already.
sa.Index("ix_repositories_name_key_c", repositories.c.name_key.collate("C")).ddl_if(dialect="postgresql")

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("digest", DIGEST, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    # 'present': the file is in place. 'deleting': being removed; looks absent to everyone.
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # Last time a writer uploaded or reused the blob: the reuse fuse and the GC grace count from here.
    sa.Column("touched_at", sa.Float, nullable=False),
    # Once a manifest named it: then, unreferenced, it goes after the reuse fuse, not the orphan grace.
    sa.Column("ever_referenced", sa.Boolean, nullable=False, server_default=sa.false()),
)

manifests = sa.Table(
    "manifests",
    metadata,
    sa.Column("digest", DIGEST, primary_key=True),
    sa.Column("media_type", sa.String(255), nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    # Sum of the sizes of everything the manifest names (as Ollama's `size`).
    sa.Column("total_size", sa.BigInteger, nullable=False),
    # Ollama-style details read from the config blob at commit time (JSON text).
    sa.Column("details", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # OCI 1.1: the manifest this one refers to (`subject`), and its artifact type, for the referrers API.
    sa.Column("subject_digest", DIGEST, nullable=True),
    sa.Column("artifact_type", sa.String(255), nullable=True),
    sa.Index("ix_manifests_subject", "subject_digest"),
)

manifest_blobs = sa.Table(
    "manifest_blobs",
    metadata,
    sa.Column("manifest_digest", DIGEST, sa.ForeignKey("manifests.digest"), primary_key=True),
    sa.Column("blob_digest", DIGEST, primary_key=True),
    sa.Index("ix_manifest_blobs_blob", "blob_digest"),
)

manifest_children = sa.Table(
    "manifest_children",
    metadata,
    sa.Column("parent_digest", DIGEST, sa.ForeignKey("manifests.digest"), primary_key=True),
    sa.Column("child_digest", DIGEST, primary_key=True),
    sa.Index("ix_manifest_children_child", "child_digest"),
)

repo_manifests = sa.Table(
    "repo_manifests",
    metadata,
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id"), primary_key=True),
    sa.Column("manifest_digest", DIGEST, sa.ForeignKey("manifests.digest"), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # When the last tag of the repository that pointed at the manifest left it (None while tagged):
    # retention's `untagged_for` counts from here.
    sa.Column("untagged_at", sa.Float, nullable=True),
    sa.Index("ix_repo_manifests_manifest", "manifest_digest"),
)

# Blobs uploaded or mounted into a repository, as distribution's repository links: a blob is
# visible in a repository through a link or through a manifest of the repository that names it
# (see `core/repo_blobs.py`). A link does not hold its blob; it is deleted with the blob's row.
repo_blobs = sa.Table(
    "repo_blobs",
    metadata,
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id"), primary_key=True),
    sa.Column("blob_digest", DIGEST, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_repo_blobs_blob", "blob_digest"),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id"), primary_key=True),
    sa.Column("name_key", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("manifest_digest", DIGEST, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("modified_at", sa.Float, nullable=False),
    sa.Column("last_used_at", sa.Float, nullable=False),
    # The tag's entry in the model listing, rendered when the tag is written (`core/listing.py`), and
    # the `modified_at` it was rendered for; NULL until rendered, "" for a tag with no Ollama name.
    sa.Column("listing", sa.Text, nullable=True),
    sa.Column("listing_at", sa.Float, nullable=True),
    sa.Index("ix_tags_repo_manifest", "repository_id", "manifest_digest"),
    sa.Index("ix_tags_manifest", "manifest_digest"),
    sa.Index("ix_tags_modified", "modified_at"),
)

trash = sa.Table(
    "trash",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("repository", sa.String(1024), nullable=False),
    sa.Column("tag", sa.String(255), nullable=False),
    sa.Column("manifest_digest", DIGEST, nullable=False),
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("deleted_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("face", sa.String(32), nullable=False),
    # The tag's own times, restored with it (JSON text).
    sa.Column("meta", sa.Text, nullable=False),
    # Set when the entry is a version an overwrite of its tag pushed out: the manifest that replaced it.
    sa.Column("replaced_by", DIGEST, nullable=True),
    sa.Index("ix_trash_manifest", "manifest_digest"),
    sa.Index("ix_trash_expires", "expires_at"),
)

# Anything outside the store that uses a model: a deployment, pipeline, agent, fine-tune, ...
# Dependents are data, so a new kind needs no new deletion code: the planner reports each as a blocker.
dependents = sa.Table(
    "dependents",
    metadata,
    sa.Column("kind", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(255), primary_key=True),
    # 'repository' (name), 'tag' (repository:tag) or 'manifest' (digest)
    sa.Column("target_kind", sa.String(16), primary_key=True),
    sa.Column("target", sa.String(1300), primary_key=True),
    # lower(target): what the planner looks dependents up by (names match case-insensitively).
    sa.Column("target_key", sa.String(1300), nullable=False, server_default=""),
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # 'block', 'warn', or 'setting:<key>' (blocks while that shared setting is true): core/dependents.py
    sa.Column("policy", sa.String(255), nullable=False, server_default="block"),
    sa.Index("ix_dependents_target_key", "target_kind", "target_key"),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("face", sa.String(32), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("bytes_freed", sa.BigInteger, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    # The name of the token the actor signed in with (never the token itself).
    sa.Column("token_name", sa.String(255), nullable=True),
    sa.Index("ix_audit_at", "at"),
)

# Blobs a delete left for the reuse fuse: the server's timer reclaims each at `due_at` (README).
reclaims = sa.Table(
    "reclaims",
    metadata,
    sa.Column("digest", DIGEST, primary_key=True),
    sa.Column("due_at", sa.Float, nullable=False),
    sa.Index("ix_reclaims_due", "due_at"),
)

# Resumable OCI blob uploads in progress; their bytes live in `<home>/uploads/<id>`.
uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # uuid4 hex
    sa.Column("repository", sa.String(1024), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # Last chunk received: a session expires this long after it (see `core/uploads.py`).
    sa.Column("updated_at", sa.Float, nullable=False),
    # Bytes received so far (the offset the next chunk must start at).
    sa.Column("size", sa.BigInteger, nullable=False),
    # Who opened it (a client address today, a user once there are accounts): per-client caps.
    sa.Column("client", sa.String(255), nullable=True),
    sa.Index("ix_uploads_updated", "updated_at"),
    sa.Index("ix_uploads_client", "client", "updated_at"),
)


# The parts of an upload session kept in an object store (`core/s3_uploads.py`): one object per
# request that saved bytes, at `offset` of the blob. Any server continues a session from this list.
upload_parts = sa.Table(
    "upload_parts",
    metadata,
    sa.Column("upload_id", sa.String(32), primary_key=True),
    sa.Column("offset", sa.BigInteger, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("key", sa.String(1024), nullable=False),
)

# Accounts (`core/accounts.py`): users and organisations share one namespace of names.
principals = sa.Table(
    "principals",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),  # lower-case, as Replicate's usernames
    sa.Column("kind", sa.String(16), nullable=False),  # 'user' or 'organization'
    sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("display_name", sa.String(255), nullable=False, server_default=""),
    # Backend roles (OpenSearch access control), as a JSON list of strings.
    sa.Column("roles", sa.Text, nullable=False, server_default="[]"),
    sa.Column("quota_bytes", sa.BigInteger, nullable=True),
    sa.Column("quota_models", sa.Integer, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("org", sa.String(64), sa.ForeignKey("principals.name"), primary_key=True),
    sa.Column("member", sa.String(64), sa.ForeignKey("principals.name"), primary_key=True),
    sa.Index("ix_memberships_member", "member"),
)

# API tokens: shown once, stored as a sha256 hash; `id` is the public part a listing shows.
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("principal", sa.String(64), sa.ForeignKey("principals.name"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_used_at", sa.Float, nullable=True),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Index("ix_tokens_principal", "principal"),
)

# Blobs a principal uploaded through the Ollama face (`POST /api/blobs`), which has no repositories:
# only its uploader (or a reader of a model naming it) may build a model on such a blob.
uploader_blobs = sa.Table(
    "uploader_blobs",
    metadata,
    sa.Column("principal", sa.String(64), primary_key=True),
    sa.Column("blob_digest", DIGEST, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_uploader_blobs_blob", "blob_digest"),
)

# Small store-wide values every server shares: the key that signs registry tokens, cluster settings.
store_settings = sa.Table(
    "store_settings",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# OpenSearch ML Commons' own objects (`core/ml_models.py`): model groups, models, tasks, connectors,
# ingest and search pipelines, agents; one JSON document each, as ML Commons keeps them in its indices.
ml_objects = sa.Table(
    "ml_objects",
    metadata,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("name_key", sa.String(512), nullable=True),  # a group's name, lower-cased, for lookups
    sa.Column("parent", sa.String(255), nullable=True),  # a model's group, a model's connector
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_ml_objects_name", "kind", "name_key"),
    sa.Index("ix_ml_objects_parent", "kind", "parent"),
)

# The Replicate face (`core/replicate_models.py`): what a version is beyond its manifest, and the
# things that use a version (predictions, trainings, deployments), recorded, never run here. Which of
# them block a deletion is in `dependents`, not here.
replicate_versions = sa.Table(
    "replicate_versions",
    metadata,
    # The model's repository, by `name_key` (a deleted model's name may be created again).
    sa.Column("repository_key", sa.String(1024), primary_key=True),
    sa.Column("version_id", sa.String(64), primary_key=True),  # the manifest digest's hex: also its tag
    sa.Column("manifest_digest", DIGEST, nullable=False),
    sa.Column("cog_version", sa.String(64), nullable=False),
    sa.Column("openapi_schema", sa.Text, nullable=False),  # JSON text
    # Lineage: the training it was pushed under, and that training's base version (`owner/name:id`).
    sa.Column("training_id", sa.String(64), nullable=True),
    sa.Column("base_version", sa.String(1200), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

replicate_runs = sa.Table(
    "replicate_runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # 'prediction' or 'training'
    sa.Column("model", sa.String(255), nullable=False),  # owner/name, lower-case
    sa.Column("version_id", sa.String(64), nullable=False),
    sa.Column("creator", sa.String(255), nullable=False),  # the account (or 'local') that asked
    sa.Column("deployment", sa.String(255), nullable=True),
    sa.Column("destination", sa.String(255), nullable=True),  # a training's model, owner/name
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("input", sa.Text, nullable=False),  # JSON text, as every field below
    sa.Column("output", sa.Text, nullable=True),
    sa.Column("logs", sa.Text, nullable=False, server_default=""),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("metrics", sa.Text, nullable=True),
    sa.Column("webhook", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("completed_at", sa.Float, nullable=True),
    sa.Index("ix_replicate_runs_creator", "kind", "creator", "created_at"),
    sa.Index("ix_replicate_runs_model", "model", "version_id"),
    sa.Index("ix_replicate_runs_destination", "destination", "status"),
)

replicate_deployments = sa.Table(
    "replicate_deployments",
    metadata,
    sa.Column("name_key", sa.String(255), primary_key=True),  # owner/name, lower-case
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("release", sa.Integer, nullable=False),  # the current release's number
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("version_id", sa.String(64), nullable=False),
    sa.Column("hardware", sa.String(64), nullable=False),
    sa.Column("min_instances", sa.Integer, nullable=False),
    sa.Column("max_instances", sa.Integer, nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("released_at", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_replicate_deployments_owner", "owner", "created_at"),
)

# Web UI sign-ins (`core/sessions.py`): a browser's session cookie, stored only as its sha256, tied to
# the API token it signed in with (revoking the token ends the session at once).
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # sha256 hex of the cookie's secret
    sa.Column("token_id", sa.String(32), nullable=False),
    sa.Column("principal", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Index("ix_web_sessions_expires", "expires_at"),
)
