"""One ``ray.init()`` for every Ray entry point: the cluster at ``$RAY_ADDRESS`` when set, else a local one."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ADDRESS_ENV = "RAY_ADDRESS"


def init_ray(num_cpus: int | None = None) -> str:
    """Connect to ``$RAY_ADDRESS`` (an existing cluster: ``ray start --head`` or KubeRay), or start a local cluster
    of ``num_cpus`` logical CPUs (default: the machine's). Idempotent. Returns where it connected ("local" or the
    address)."""
    import ray

    address = os.environ.get(ADDRESS_ENV, "").strip() or None
    if not ray.is_initialized():
        # a local cluster: this process's folder is on the workers' path (app.py, serve_app.py); a remote one runs
        # the image of deploy/ (medmm installed), so nothing is shipped from here
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 logging_level=logging.WARNING)
    where = address or "local"
    log.info("ray: %s (%s CPUs)", where, ray.cluster_resources().get("CPU"))
    return where
