"""The per-test time budget that keeps the quick suite quick (tests/timing.py, enforced in conftest.py)."""
import timing


def test_a_test_over_the_budget_is_named_and_the_budget_scales_with_the_machines_slowness():
    durations = {"fast": 3.0, "heavy": 45.0, "edge": 30.0}
    assert timing.over_budget(durations, 30.0, 1.0) == {"heavy": 45.0}
    assert timing.over_budget(durations, 30.0, 2.0) == {}          # a 2× slower machine: 60 s allowed


def test_slowness_is_the_workload_time_over_the_reference_and_never_below_one(monkeypatch):
    times = iter([0.12, 0.08, 0.10, 0.09, 0.11])                   # 5 timed runs after an untimed warm-up
    monkeypatch.setattr(timing, "_timed", lambda f: next(times))
    monkeypatch.setattr(timing, "_workload", lambda: None)
    monkeypatch.setattr(timing, "REFERENCE_WORKLOAD_S", 0.04)
    assert timing.slowness() == 0.08 / 0.04
    times = iter([0.01] * 5)
    monkeypatch.setattr(timing, "_timed", lambda f: next(times))
    assert timing.slowness() == 1.0


def test_cpu_description_names_the_model_and_whether_it_has_avx512():
    from xai_cxr.runtime import cpu_description, cpu_line
    zen1 = ("processor\t: 0\nmodel name\t: AMD EPYC 7551 32-Core Processor\n"
            "flags\t\t: fpu sse sse2 avx avx2 fma\nprocessor\t: 1\nmodel name\t: AMD EPYC 7551 32-Core Processor\n")
    d = cpu_description(zen1)
    assert (d["cpu"], d["avx512"], d["avx512_bf16"]) == ("AMD EPYC 7551 32-Core Processor", False, False)
    assert cpu_line(d).endswith("no AVX-512")
    spr = cpu_description("model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: avx2 avx512f avx512_bf16 amx_tile\n")
    assert (spr["avx512"], spr["avx512_bf16"]) == (True, True)
