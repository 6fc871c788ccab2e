"""EnergyMeter tests: fake counters and a fake clock give exact joules; one real CPU workload."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from medmm import energy
from medmm.energy import (
    DEFAULT_GRID_INTENSITY_G_PER_KWH,
    GRID_INTENSITY_ENV,
    METHOD_ESTIMATE,
    METHOD_NVML_COUNTER,
    METHOD_NVML_POWER,
    METHOD_RAPL,
    CpuTimeEstimateSource,
    EnergyMeter,
    EnergySource,
    NvmlSource,
    Reading,
    detect_sources,
    find_nvml_source,
    measure_idle_baseline,
)


class World:
    """Fake time and a fake machine-wide energy counter (dyadic values so float sums are exact)."""

    def __init__(self) -> None:
        self.t = 0.0
        self.joules = 0.0
        self.watts: float | None = None

    def clock(self) -> float:
        return self.t


class FakeCounter(EnergySource):
    component = "cpu_package"
    counter_method = METHOD_RAPL

    def __init__(self, world: World, component: str = "cpu_package") -> None:
        super().__init__(world.clock)
        self.world = world
        self.component = component

    def read(self) -> Reading:
        return Reading(self.world.joules, self.world.watts)


def make_meter(world: World, sources, **kw) -> EnergyMeter:
    kw.setdefault("grid_intensity_g_per_kwh", 400.0)
    return EnergyMeter(sources, clock=world.clock, **kw)


# -- RAPL -----------------------------------------------------------------------------------------

def make_powercap(root: Path, zones: dict[str, tuple[str, int, int]]) -> None:
    """zones: dir name -> (name, energy_uj, max_energy_range_uj)."""
    for d, (name, e, m) in zones.items():
        z = root / d
        z.mkdir(parents=True)
        (z / "name").write_text(name + "\n")
        (z / "energy_uj").write_text(f"{e}\n")
        (z / "max_energy_range_uj").write_text(f"{m}\n")


def test_rapl_wraparound_exact(tmp_path: Path) -> None:
    world = World()
    make_powercap(tmp_path, {"intel-rapl:0": ("package-0", 9_000_000, 10_000_000),
                             "intel-rapl:0:0": ("core", 1, 10_000_000),
                             "intel-rapl:0:1": ("dram", 100, 2_000_000),
                             "intel-rapl-mmio:0": ("package-0", 5, 10_000_000)})
    sources = energy.find_rapl_sources(tmp_path, clock=world.clock)
    assert sorted(s.component for s in sources) == ["cpu_package", "dram"]
    meter = make_meter(world, sources)
    with meter:
        world.t = 1.0
        (tmp_path / "intel-rapl:0" / "energy_uj").write_text("500000\n")     # wrapped: +1.5 J
        (tmp_path / "intel-rapl:0:1" / "energy_uj").write_text("250100\n")   # +0.25 J
    rec = meter.record
    assert rec.components["cpu_package"].joules == 1.5
    assert rec.components["cpu_package"].method == METHOD_RAPL
    assert rec.components["dram"].joules == 0.25
    assert rec.joules == 1.75
    assert rec.method == METHOD_RAPL
    assert rec.duration_s == 1.0


def test_rapl_permission_denied_falls_back_to_estimate(tmp_path: Path) -> None:
    make_powercap(tmp_path, {"intel-rapl:0": ("package-0", 1, 10_000_000)})

    def denied(path: Path) -> int:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return int(path.read_text())

    class NoNvml:
        class NVMLError(Exception):
            pass

        def nvmlInit(self) -> None:
            raise self.NVMLError("driver not loaded")

    sources = detect_sources(nvml=NoNvml(), powercap_root=tmp_path, read_int=denied)
    assert [type(s) for s in sources] == [CpuTimeEstimateSource]
    with EnergyMeter(sources) as meter:
        pass
    assert meter.record.method == METHOD_ESTIMATE
    assert set(meter.record.components) == {"cpu"}


# -- NVML -----------------------------------------------------------------------------------------

class FakeNvml:
    """pynvml-like module: one GPU with a mJ counter and a mW power reading."""

    class NVMLError(Exception):
        pass

    def __init__(self, world: World, *, devices: int = 1, counter: bool = True) -> None:
        self.world, self.devices, self.counter = world, devices, counter
        self.mj = 0

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return self.devices

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        if not self.counter:
            raise self.NVMLError("not supported")
        return self.mj

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return int(self.world.watts * 1000)


def test_no_nvml_means_no_gpu_component(tmp_path: Path) -> None:
    world = World()
    nvml = FakeNvml(world, devices=0)
    assert find_nvml_source(nvml) is None
    sources = detect_sources(nvml=nvml, powercap_root=tmp_path / "missing")
    with EnergyMeter(sources) as meter:
        pass
    assert "gpu" not in meter.record.components
    assert "gpu" not in meter.record.to_dict()["components"]


def test_nvml_counter_long_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    world = World()
    world.watts = 100.0
    nvml = FakeNvml(world)
    nvml.mj = 1000
    src = find_nvml_source(nvml, clock=world.clock)
    assert isinstance(src, NvmlSource)
    meter = make_meter(world, [src])
    with meter:
        world.t, nvml.mj = 0.5, 3500  # +2.5 J over 0.5 s
    assert meter.record.components["gpu"].joules == 2.5
    assert meter.record.components["gpu"].method == METHOD_NVML_COUNTER


def test_nvml_short_window_uses_power_x_time() -> None:
    world = World()
    world.watts = 100.0
    nvml = FakeNvml(world)
    src = NvmlSource(nvml, [0], clock=world.clock)
    meter = make_meter(world, [src])
    with meter:
        world.t, world.watts, nvml.mj = 0.0625, 200.0, 1  # counter moved, but window < 0.1 s
    assert meter.record.components["gpu"].method == METHOD_NVML_POWER
    assert meter.record.components["gpu"].joules == 150.0 * 0.0625  # mean(100, 200) W x 1/16 s
    # long window but the counter did not move -> power x time too
    meter = make_meter(world, [src])
    with meter:
        world.t += 0.5
    assert meter.record.components["gpu"].method == METHOD_NVML_POWER
    assert meter.record.components["gpu"].joules == 100.0
    assert "window too short" in meter.record.uncertainty


def test_nvml_without_counter_uses_power() -> None:
    world = World()
    world.watts = 64.0
    src = find_nvml_source(FakeNvml(world, counter=False), clock=world.clock)
    assert src is not None
    meter = make_meter(world, [src])
    with meter:
        world.t = 2.0
    assert meter.record.components["gpu"].joules == 128.0
    assert meter.record.components["gpu"].method == METHOD_NVML_POWER


# -- attribution, stages, baseline ------------------------------------------------------------------

def test_overlapping_windows_split_equally_exact() -> None:
    world = World()
    src = FakeCounter(world)
    a, b = make_meter(world, [src]), make_meter(world, [src])
    a.start()                                # t=0, E=0
    world.t, world.joules = 1.0, 10.0
    b.start()                                # A alone: 10 J -> A
    world.t, world.joules = 2.0, 30.0
    a.stop()                                 # both: 20 J -> 10 each
    world.t, world.joules = 3.0, 36.0
    b.stop()                                 # B alone: 6 J -> B
    assert a.record.joules == 20.0
    assert b.record.joules == 16.0
    assert a.record.joules + b.record.joules == 36.0
    assert "overlapping" in a.record.uncertainty


def test_observer_total_around_nested_meters() -> None:
    """split=False (e.g. a training total around per-fold meters) takes the whole delta and dilutes nobody."""
    world = World()
    src = FakeCounter(world)
    total = make_meter(world, [src], split=False).start()
    fold = make_meter(world, [src]).start()
    world.t, world.joules = 1.0, 12.0
    other = make_meter(world, [src]).start()     # a concurrent request overlapping the fold
    world.t, world.joules = 2.0, 20.0
    fold.stop()
    world.t, world.joules = 3.0, 21.0
    other.stop()
    world.t, world.joules = 4.0, 25.0
    total.stop()
    assert fold.record.joules == 16.0              # 12 + 8/2
    assert other.record.joules == 5.0              # 8/2 + 1
    assert total.record.joules == 25.0
    assert "Observer window" in total.record.uncertainty


def test_stage_split_sums_to_total_and_baseline() -> None:
    world = World()
    src = FakeCounter(world)
    meter = make_meter(world, [src], baseline_watts={"cpu_package": 2.0})
    with meter:
        world.t, world.joules = 0.5, 1.5             # outside stages: 1.5 J - 2 W x 0.5 s = 0.5
        with meter.stage("load"):
            world.t, world.joules = 1.5, 11.5        # 10 J - 2 J = 8
        with meter.stage("inference"):
            world.t, world.joules = 3.5, 31.5        # 20 J - 4 J = 16
        with meter.stage("explanation"):
            world.t, world.joules = 4.0, 31.75       # 0.25 J - 1 J -> floored at 0
        with meter.stage("report"):
            world.t, world.joules = 4.25, 32.75      # 1 J - 0.5 J = 0.5
    rec = meter.record
    assert list(rec.stages) == ["load", "inference", "explanation", "report", "other"]
    assert {k: v.joules for k, v in rec.stages.items()} == {
        "load": 8.0, "inference": 16.0, "explanation": 0.0, "report": 0.5, "other": 0.5}
    assert {k: v.duration_s for k, v in rec.stages.items()} == {
        "load": 1.0, "inference": 2.0, "explanation": 0.5, "report": 0.25, "other": 0.5}
    assert sum(s.joules for s in rec.stages.values()) == rec.joules == 25.0
    assert sum(s.duration_s for s in rec.stages.values()) == rec.duration_s == 4.25
    assert "idle baseline 2 W subtracted" in rec.uncertainty


def test_stage_guards() -> None:
    world = World()
    meter = make_meter(world, [FakeCounter(world)])
    with pytest.raises(RuntimeError):
        with meter.stage("load"):
            pass
    with meter:
        with meter.stage("load"):
            with pytest.raises(RuntimeError):
                with meter.stage("inference"):
                    pass
    with pytest.raises(RuntimeError):
        meter.start()
    assert list(meter.record.stages) == ["load"]  # no time outside stages -> no "other"


def test_failing_source_is_dropped_not_raised() -> None:
    world = World()

    class Broken(FakeCounter):
        def read(self) -> Reading:
            if self.world.t > 0:
                raise OSError("gone")
            return super().read()

    good, bad = FakeCounter(world), Broken(world, component="gpu")
    meter = make_meter(world, [good, bad])
    with meter:
        world.t, world.joules = 1.0, 4.0
    assert set(meter.record.components) == {"cpu_package"}
    assert meter.record.joules == 4.0
    assert "gpu: reading failed" in meter.record.uncertainty
    assert not bad._open


def test_threads_conserve_energy() -> None:
    """Real threads on one shared counter: attributed joules sum to the counter delta while any window is open."""

    class Ticking(EnergySource):
        def __init__(self) -> None:
            super().__init__()
            self.reads = 0

        def read(self) -> Reading:
            self.reads += 1
            return Reading(float(self.reads))

    src, n = Ticking(), 4
    barrier = threading.Barrier(n)
    meters = [EnergyMeter([src], grid_intensity_g_per_kwh=0) for _ in range(n)]

    def work(m: EnergyMeter) -> None:
        m.start()
        barrier.wait()
        with m.stage("inference"):
            pass
        barrier.wait()
        m.stop()

    threads = [threading.Thread(target=work, args=(m,)) for m in meters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert src.reads == 4 * n
    assert sum(m.record.joules for m in meters) == pytest.approx(4 * n - 1, rel=1e-12)


# -- units, config, serialisation ---------------------------------------------------------------------

def test_wh_and_gco2e_exact() -> None:
    world = World()
    src = FakeCounter(world)
    meter = make_meter(world, [src], grid_intensity_g_per_kwh=500.0)
    with meter:
        world.t, world.joules = 1.0, 7200.0
    rec = meter.record
    assert rec.wh == 2.0
    assert rec.gco2e == 1.0  # 0.002 kWh x 500 g/kWh
    d = rec.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["joules"] == 7200.0 and d["wh"] == 2.0 and d["gco2e"] == 1.0
    assert d["grid_intensity_g_per_kwh"] == 500.0
    assert d["components"] == {"cpu_package": {"joules": 7200.0, "method": METHOD_RAPL}}


def test_grid_intensity_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World()
    monkeypatch.delenv(GRID_INTENSITY_ENV, raising=False)
    assert EnergyMeter([FakeCounter(world)]).start().stop().grid_intensity_g_per_kwh == DEFAULT_GRID_INTENSITY_G_PER_KWH
    monkeypatch.setenv(GRID_INTENSITY_ENV, "36")
    meter = EnergyMeter([FakeCounter(world)], clock=world.clock)
    with meter:
        world.t, world.joules = 1.0, 3.6e6 / 2   # 0.5 kWh
    assert meter.record.gco2e == 18.0
    assert EnergyMeter([FakeCounter(world)], grid_intensity_g_per_kwh=100).start().stop().grid_intensity_g_per_kwh == 100
    monkeypatch.setenv(GRID_INTENSITY_ENV, "not-a-number")
    assert EnergyMeter([FakeCounter(world)]).start().stop().grid_intensity_g_per_kwh == DEFAULT_GRID_INTENSITY_G_PER_KWH
    with pytest.raises(ValueError):
        EnergyMeter([FakeCounter(world)], grid_intensity_g_per_kwh=-1)


def test_cpu_estimate_exact_and_idle_baseline() -> None:
    world = World()
    cpu = {"s": 10.0}
    src = CpuTimeEstimateSource(2.0, cpu_time=lambda: cpu["s"], clock=world.clock)
    meter = make_meter(world, [src], baseline_watts={"cpu": 100.0})  # ignored: estimate has no idle share
    with meter:
        world.t, cpu["s"] = 1.0, 11.5
    assert meter.record.components["cpu"].joules == 3.0
    assert meter.record.method == METHOD_ESTIMATE
    assert "±50%" in meter.record.uncertainty

    world.joules = 0.0
    world.watts = None
    counter = FakeCounter(world)
    slept = []

    def fake_sleep(s: float) -> None:
        slept.append(s)
        world.t += 2.0
        world.joules += 50.0

    assert measure_idle_baseline([counter, src], seconds=2.0, sleep=fake_sleep) == {"cpu_package": 25.0}
    assert slept == [2.0]
    # only the CPU-time estimate: nothing to measure, no start-up wait
    assert measure_idle_baseline([src], seconds=2.0, sleep=fake_sleep) == {} and slept == [2.0]


def test_server_start_up_measures_the_idle_baseline_and_requests_subtract_it(monkeypatch) -> None:
    """serving_pipeline builds the served pipeline with the idle power; run_request's meter is given it."""
    from medmm import service

    class FakePipeline:
        idle_watts: dict = {}

        def for_serving(self, *, batcher=None, idle_watts=None):
            served = FakePipeline()
            served.idle_watts = dict(idle_watts or {})
            return served

    monkeypatch.setattr(service, "measure_idle_baseline", lambda: {"cpu_package": 7.5})
    monkeypatch.setattr(service, "batching_from_env", lambda p: None)
    loaded = FakePipeline()
    pipe, applied = service.serving_pipeline(loaded)
    assert pipe.idle_watts == {"cpu_package": 7.5} and applied["idle_watts"] == {"cpu_package": 7.5}
    assert loaded.idle_watts == {}    # the loaded pipeline is not patched

    seen = {}

    class Meter:  # stands in for EnergyMeter: records what it was given, then stops the request early
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def __enter__(self):
            raise RuntimeError("stop here")

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(service, "EnergyMeter", Meter)
    with pytest.raises(RuntimeError, match="stop here"):
        service.run_request(pipe, [], "cough")
    assert seen == {"baseline_watts": {"cpu_package": 7.5}}


# -- real workload ---------------------------------------------------------------------------------------

def test_real_cpu_workload_reports_energy() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 256))
    with EnergyMeter() as meter:
        with meter.stage("inference"):
            end = time.perf_counter() + 0.2
            while time.perf_counter() < end:
                a = np.tanh(a @ a)
    rec = meter.record
    cpu = rec.components.get("cpu") or rec.components.get("cpu_package")
    assert cpu is not None and cpu.joules > 0
    assert cpu.method in (METHOD_ESTIMATE, METHOD_RAPL)
    assert rec.joules > 0 and rec.duration_s >= 0.2
    assert rec.stages["inference"].joules > 0
    assert rec.to_dict()["method"] == rec.method
