"""medmm on Ray Serve: the Gradio front end (the ingress deployment) over ``MedmmModel`` replicas.

Started by ``medmm serve`` (``medmm.scale.serve.start``), which imports :func:`build_app` by its Serve import path;
beside ``app.py`` because it builds gradio objects (the library never imports gradio, tests/test_layout.py). The
page is ``app.build_demo`` unchanged, over :class:`RemotePipeline`: each analysis and each ``/predict_json`` call
runs whole in one model replica (``medmm.scale.serve.MedmmModel``) and comes back as the same ``RequestResult``
``python app.py`` would present. It is mounted with ``python app.py``'s limits (``max_file_size``, the security
middleware's body caps, capped sessions), so an oversized upload is refused here, before it reaches a replica.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from medmm.models.checkpoint import read_meta
from medmm.scale.serve import ServeOptions, UserError, model_app


class RemotePipeline:
    """What ``app.build_demo`` needs of a pipeline (``findings``, ``meta``), running each request in a model replica
    through a ``DeploymentHandle``. Scans travel as bytes (a replica may be on another node than the upload)."""

    def __init__(self, handle: Any, checkpoint: str) -> None:
        self.handle = handle
        self.meta = read_meta(checkpoint)
        self.findings: tuple[str, ...] = tuple(self.meta.findings)

    def run_request(self, scans: list[Any], notes: str | None = None, *,
                    on_stage: Callable[[str, int, int], None] | None = None, **options: Any) -> Any:
        """``medmm.service.run_request`` in a replica. Stage progress is not relayed (the page's bar shows the
        start, then the drawing); a refused input raises the same ``ScanError`` / ``InputError`` as locally."""
        blobs = [Path(p).read_bytes() for p in scans]
        result = self.handle.run.remote(blobs, notes, options).result()
        if isinstance(result, UserError):
            raise result.exception()
        return result


def _ingress_class() -> type:
    from ray.serve.gradio_integrations import GradioIngress

    class MedmmIngress(GradioIngress):
        """The unchanged page of ``app.build_demo`` over the model replicas, with ``python app.py``'s limits."""

        def __init__(self, model: Any, checkpoint: str) -> None:
            import gradio as gr
            from fastapi import FastAPI

            import app as page                      # after the env of the replica is set (queue concurrency)
            from medmm.serve import server

            blocks = page.build_demo(RemotePipeline(model, checkpoint))
            kwargs = server.launch_kwargs(page.MAX_FILE_SIZE)
            blocks.state_session_capacity = kwargs.pop("state_session_capacity")
            asgi = gr.mount_gradio_app(FastAPI(), blocks, "/", footer_links=["api"], css=page.CSS, **kwargs)
            super(GradioIngress, self).__init__(asgi)   # GradioIngress's own __init__ mounts without the limits

    return MedmmIngress


def build_app(options: ServeOptions) -> Any:
    """The Serve application: the ingress (one replica, no CPU reserved: it only forwards) bound to the model
    deployment. Its gradio queue admits as many analyses as the replicas can hold at once."""
    from ray import serve

    replicas = (options.max_replicas or options.min_replicas) if options.autoscaling() else options.replicas
    env = {"MEDMM_QUEUE_CONCURRENCY": str(max(1, replicas * options.max_ongoing))}
    for name in ("MEDMM_AUTH", "MEDMM_CACHE_DIR"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    ingress = serve.deployment(_ingress_class(), name="MedmmIngress", num_replicas=1, max_ongoing_requests=256,
                               ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": env}})
    return ingress.bind(model_app(options), options.checkpoint)


def build_app_from_config(args: dict[str, Any]) -> Any:
    """The same application from a Serve config file's ``args`` (``ServeOptions`` fields; ``deploy/rayservice.yaml``,
    or ``serve run serve_app:build_app_from_config checkpoint=checkpoints/default min_replicas=2 max_replicas=4``).
    ``host`` and ``port`` are the cluster's there, not the application's."""
    fields = set(ServeOptions.__dataclass_fields__)
    unknown = sorted(set(args) - fields)
    if unknown:
        raise ValueError(f"unknown medmm serve options: {', '.join(unknown)}")
    numeric = {"replicas", "min_replicas", "max_replicas", "max_ongoing", "max_batch_size", "port"}
    values = {k: (int(v) if k in numeric else float(v) if k in ("batch_wait_ms", "target_ongoing") else v)
              for k, v in args.items()}
    return build_app(ServeOptions(**values))
