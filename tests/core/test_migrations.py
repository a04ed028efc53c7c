"""Alembic migrations: they build exactly the schema the code declares, and carry old data forward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import Catalog

BYTE_ORDER_INDEX = "ix_repositories_name_key_c"


def url_for(db_url: str | None, tmp_path: Path) -> str:
    return db_url or f"sqlite:///{tmp_path / 'catalog.db'}"


@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_migrations_build_the_schema_the_code_declares(db_url: str | None, tmp_path: Path) -> None:
    catalog = Catalog(url_for(db_url, tmp_path), lock_dir=tmp_path)
    catalog.migrate()
    with catalog.engine.connect() as conn:
        opts = {"include_object": lambda _o, name, *_: name != BYTE_ORDER_INDEX}
        assert compare_metadata(MigrationContext.configure(conn, opts=opts), t.metadata) == []
        if not catalog.is_sqlite:  # Alembic reflects an index on `x COLLATE "C"` as one on `x`
            indexdef = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = %(n)s", {"n": BYTE_ORDER_INDEX}
            ).scalar()
            assert indexdef is not None and 'name_key COLLATE "C"' in indexdef, indexdef
    catalog.migrate()  # a second start changes nothing
    catalog.dispose()


def test_0003_fills_in_the_subjects_of_manifests_stored_before_it(db_url: str | None, tmp_path: Path) -> None:
    url = url_for(db_url, tmp_path)
    catalog = Catalog(url, lock_dir=tmp_path)
    catalog.migrate("0002")
    subject = "sha256:" + "ab" * 32
    referrer = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/spdx+json",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": "sha256:" + "cd" * 32,
                "size": 2,
            },
            "layers": [],
            "subject": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": subject,
                "size": 9,
            },
        }
    ).encode()
    plain = b'{"schemaVersion":2,"config":{"digest":"sha256:' + b"ef" * 32 + b'","size":2},"layers":[]}'
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for digest, content in (("sha256:" + "01" * 32, referrer), ("sha256:" + "02" * 32, plain)):
            conn.execute(
                sa.text(
                    "INSERT INTO manifests (digest, media_type, content, size, total_size, details,"
                    " created_at) VALUES (:d, :m, :c, :s, 0, NULL, 0)"
                ),
                {
                    "d": digest,
                    "m": "application/vnd.oci.image.manifest.v1+json",
                    "c": content,
                    "s": len(content),
                },
            )
    catalog.migrate()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT digest, subject_digest, artifact_type FROM manifests ORDER BY digest")
        )
        assert [tuple(r) for r in rows] == [
            ("sha256:" + "01" * 32, subject, "application/spdx+json"),
            ("sha256:" + "02" * 32, None, None),
        ]
    engine.dispose()
    catalog.dispose()
