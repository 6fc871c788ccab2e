"""``medmm serve``: the Gradio app on Ray Serve — model replicas behind one Gradio front end.

Two deployments in one Serve application:

* ``MedmmModel`` (this module, gradio-free): a loaded pipeline per replica, ``N`` replicas or autoscaling bounds. A
  request runs whole inside one replica (``run_request``: load, inference, explanation, report, metered there); its
  image-encoder forwards go through ``@serve.batch``, which groups the forwards of the requests in flight on that
  replica into one (``max_batch_size`` calls, waiting at most ``batch_wait_ms`` for company). On this path Serve's
  batching replaces medmm's in-process ``ImageBatcher`` (one batching mechanism per path; the single-process app
  keeps ``ImageBatcher`` behind ``MEDMM_BATCHING``). The encoder is row-independent (eval mode), so every caller gets
  the rows it would have got alone (tests/test_ray.py, to 1e-6).
* the ingress, ``serve_app:MedmmIngress`` beside ``app.py``: the unchanged page of ``app.build_demo`` over a
  pipeline that forwards each request to ``MedmmModel`` (gradio lives outside the library, tests/test_layout.py),
  mounted with the limits ``python app.py`` launches with, so an oversized upload is refused there, before a replica.

``ray.init`` connects to ``$RAY_ADDRESS`` when set, else starts a local cluster (``medmm.scale.cluster``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

log = logging.getLogger(__name__)

FRONT_END = "serve_app:build_app"       # the ingress, beside app.py (a gradio module: outside the library)
DEFAULT_PORT = 8000                     # Serve's HTTP proxy (python app.py keeps 7860)


@dataclass(frozen=True)
class ServeOptions:
    """What ``medmm serve`` takes. ``replicas`` fixed, or autoscaling between ``min_replicas`` and
    ``max_replicas`` (both set) with ``target_ongoing`` requests per replica."""

    checkpoint: str
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing: float = 2.0
    max_ongoing: int = 4                 # requests a replica holds at once (the rest wait in its handle's queue)
    max_batch_size: int = 4              # @serve.batch: encoder calls per grouped forward (<= max_ongoing)
    batch_wait_ms: float = 5.0           # @serve.batch: how long the first call waits for company
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    runtime: str | None = None           # encoder runtime of the replicas (as predict --runtime)

    def autoscaling(self) -> dict[str, Any] | None:
        if self.min_replicas is None and self.max_replicas is None:
            return None
        lo, hi = self.min_replicas or 1, self.max_replicas or max(1, self.min_replicas or 1)
        if not 1 <= lo <= hi:
            raise ValueError("--min-replicas must be at least 1 and at most --max-replicas")
        return {"min_replicas": lo, "max_replicas": hi, "target_ongoing_requests": self.target_ongoing}

    def deployment_options(self) -> dict[str, Any]:
        """``serve.deployment(...)`` options of ``MedmmModel``."""
        scaling = self.autoscaling()
        if scaling is None and self.replicas < 1:
            raise ValueError("--replicas must be at least 1")
        placement = {"num_replicas": self.replicas} if scaling is None else {"autoscaling_config": scaling}
        return {**placement, "max_ongoing_requests": self.max_ongoing, "ray_actor_options": {"num_cpus": 1}}


@dataclass(frozen=True)
class UserError:
    """A request the pipeline refused with a user-facing message (``ScanError`` / ``InputError``): returned, not
    raised, so the front end shows the same one line the single process shows (a raised one would arrive wrapped
    in Ray's traceback)."""

    kind: str        # "ScanError" | "InputError"
    message: str

    def exception(self) -> Exception:
        from medmm.io import ScanError
        from medmm.pipeline import InputError

        return (ScanError if self.kind == "ScanError" else InputError)(self.message)


class MedmmModel:
    """One Serve replica: the served pipeline, its encoder forwards batched across in-flight requests."""

    def __init__(self, checkpoint: str, max_batch_size: int = 4, batch_wait_ms: float = 5.0,
                 runtime: str | None = None, concurrency: int = 4) -> None:
        from ray import serve

        from medmm.notes import read_note
        from medmm.pipeline import Pipeline
        from medmm.service import BATCHING_ENV, serving_pipeline

        os.environ.pop(BATCHING_ENV, None)       # Serve batches here: no ImageBatcher thread besides it
        served, self.settings = serving_pipeline(Pipeline.from_checkpoint(checkpoint, runtime=runtime), concurrency)
        self._forward = served.image_encoder_forward()
        self.pipeline = served.for_serving(batcher=self._encode_from_thread, idle_watts=served.idle_watts)
        self._encode_batch = serve.batch(max_batch_size=max_batch_size,
                                         batch_wait_timeout_s=batch_wait_ms / 1000)(self._encode_calls)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = self.calls = 0
        self.settings.update(max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms)
        read_note("warm-up")                     # the clinical-text reader, built before the first request

    async def run(self, scans: Sequence[bytes], notes: str | None, options: dict[str, Any]) -> Any:
        """One request (``run_request`` with ``options``): a ``RequestResult``, or a :class:`UserError`."""
        from medmm.io import ScanError
        from medmm.pipeline import InputError
        from medmm.service import run_request

        self._loop = asyncio.get_running_loop()
        try:
            return await asyncio.to_thread(run_request, self.pipeline, list(scans), notes, **options)
        except (ScanError, InputError) as exc:
            return UserError(type(exc).__name__, str(exc))

    def stats(self) -> dict[str, Any]:
        """The replica's settings and batching so far (``pid`` for the load test's replica kill)."""
        return {**self.settings, "pid": os.getpid(), "batches": self.batches, "calls": self.calls,
                "mean_batch": round(self.calls / self.batches, 2) if self.batches else None}

    def _encode_from_thread(self, x: Any) -> Any:
        """The pipeline's batcher: ``[N, 3, S, S]`` -> ``[N, F]`` through ``@serve.batch`` on the replica's loop
        (the pipeline runs in a worker thread of :meth:`run`)."""
        return asyncio.run_coroutine_threadsafe(self._encode_batch(x), self._loop).result()

    async def _encode_calls(self, xs: list[Any]) -> list[Any]:
        """``@serve.batch``'s handler: one forward over every waiting call's views; each call gets its own rows."""
        import torch

        def forward() -> Any:
            with torch.no_grad():    # not inference_mode: explanations use the rows inside an autograd graph
                return self._forward(torch.cat(xs) if len(xs) > 1 else xs[0])

        out = await asyncio.to_thread(forward)        # the loop keeps accepting requests meanwhile
        self.batches, self.calls = self.batches + 1, self.calls + len(xs)
        rows, i = [], 0
        for x in xs:
            n = int(x.shape[0])
            rows.append(out[i:i + n].clone())         # own storage: no caller holds a view of the batch
            i += n
        return rows


def model_app(options: ServeOptions) -> Any:
    """The bound ``MedmmModel`` deployment (an application node the ingress gets as a handle)."""
    from ray import serve

    deployment = serve.deployment(MedmmModel, name="MedmmModel", **options.deployment_options())
    return deployment.bind(options.checkpoint, options.max_batch_size, options.batch_wait_ms, options.runtime,
                           options.max_ongoing)


def front_end() -> Any:
    """``serve_app.build_app``: the ingress module beside ``app.py``, by its Serve import path, else from the current
    folder (``medmm serve`` runs in a medmm checkout, like ``python app.py``; a local cluster's workers import from
    the driver's folder too)."""
    import importlib.util
    import sys
    from pathlib import Path

    from ray._common.utils import import_attr

    module, _, attr = FRONT_END.partition(":")
    if module not in sys.modules and importlib.util.find_spec(module) is None:
        path = Path.cwd() / f"{module}.py"
        if not path.is_file():
            raise RuntimeError(f"medmm serve runs in a medmm checkout: {path.name} (the Gradio front end, beside "
                               "app.py) is not in the current folder")
        spec = importlib.util.spec_from_file_location(module, path)
        sys.modules[module] = loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
    return import_attr(FRONT_END)


def start(options: ServeOptions, blocking: bool = True) -> str:
    """Start (or connect to) Ray, run the application, return its URL; with ``blocking`` serve until Ctrl-C."""
    from ray import serve

    from medmm.scale.cluster import init_ray

    options.deployment_options()                    # bad bounds fail before a cluster starts
    init_ray()
    serve.start(http_options={"host": options.host, "port": options.port})
    app = front_end()(options)
    serve.run(app, name="medmm", route_prefix="/", blocking=False)
    url = f"http://{options.host}:{options.port}/"
    log.warning("medmm on Ray Serve: %s (%s)", url, asdict(options))
    if blocking:
        _block()
    return url


def _block() -> None:
    import time

    from ray import serve

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
