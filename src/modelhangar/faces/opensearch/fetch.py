"""A model's `url`, fetched in the background through the transfer layer: every connection checked
against the egress rules (`core/egress.py`, HANGAR_PULL_FROM), bounded in time and pace
(`transfer/net.py`) and in size (ML Commons' 4 GB), streamed into the store, hash checked before
anything is kept (`core/ml_models.install_content`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx

from modelhangar.core import ml_models as ml
from modelhangar.core.actors import Actor
from modelhangar.core.store import Store
from modelhangar.transfer.errors import RegistryError
from modelhangar.transfer.net import TransferLimits

log = logging.getLogger("modelhangar.opensearch")
PIECE = 1 << 20


def fetch_into(store: Store, actor: Actor, url: str, task_id: str, model_id: str) -> None:
    """Download `url` into the model, or fail its task saying why (nothing is kept)."""
    try:
        client = TransferLimits.of(store.settings, actor).client(pull=True)
        with client, client.stream("GET", url) as response:
            if response.status_code != 200:
                raise ml.MLError(400, f"Failed to download model from {url}: HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > ml.MODEL_MAX:
                raise ml.MLError(400, "Model content size exceeds the limit of 4GB")

            def pieces() -> Iterator[bytes]:
                yield from response.iter_raw(PIECE)

            ml.install_content(store, task_id, model_id, pieces())
    except ml.MLError as e:
        ml.fail_task(store, task_id, model_id, e.reason)
    except (RegistryError, httpx.HTTPError, OSError) as e:
        ml.fail_task(store, task_id, model_id, f"Failed to download model from {url}: {e}")
    except Exception as e:  # the task must end; the log has the rest
        log.exception("fetching %s for model %s failed", url, model_id)
        ml.fail_task(store, task_id, model_id, f"Failed to download model from {url}: {type(e).__name__}")
