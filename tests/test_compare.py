"""RhymeFlowCompare: the project's metrics in the shipped core, the side-by-side video, the report text,
its timing from run reports, and the errors; through ComfyUI's executor where the node is involved."""
import math
import sys

import pytest
import torch
import torch.nn.functional as F

import tools.metrics as tool_metrics
from rhymeflow_core import metrics
from rhymeflow_core.errors import RhymeFlowInputError
from rhymeflow_core.report import RunReport
from tools import headless


def video(frames=11, height=24, width=20, seed=0):
    return torch.rand(frames, height, width, 3, generator=torch.Generator().manual_seed(seed))


def checkerboard(frames, height, width, amplitude):
    """+-amplitude in a checkerboard: an exact mean squared error of amplitude**2."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    sign = ((ys + xs) % 2 * 2 - 1).float()
    return (sign * amplitude)[None, :, :, None].expand(frames, height, width, 3)


def ssim_whole_video(x, y):
    """docs/algorithm.md §7 on the whole video at once (the tools' original form), as an oracle for the chunked core."""
    x, y = x.permute(0, 3, 1, 2).double(), y.permute(0, 3, 1, 2).double()

    def box(t):
        return F.avg_pool2d(t, 11, stride=1, padding=5, count_include_pad=True)

    mx, my = box(x), box(y)
    vx, vy, cxy = box(x * x) - mx * mx, box(y * y) - my * my, box(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.flatten(1).mean(1).mean())


# ---- the metrics: core and tools agree, on known inputs ----------------------------------------
def test_tools_metrics_are_the_core_metrics():
    for name in ("psnr", "ssim", "temporal_error", "compare"):
        assert getattr(tool_metrics, name) is getattr(metrics, name)


def test_identical_videos_score_the_psnr_cap_and_ssim_one():
    a = video()
    c = metrics.compare_videos(a, a.clone(), "dense", "RhymeFlow")
    assert c.psnr == pytest.approx(metrics.PSNR_CAP) and metrics.PSNR_CAP == pytest.approx(120.0)
    assert c.ssim == pytest.approx(1.0, abs=1e-12) and c.temporal_error == 0.0
    assert tool_metrics.compare(a.clone(), a) == {"psnr": c.psnr, "ssim": c.ssim, "temporal_error": c.temporal_error}
    text = metrics.format_report(c)
    assert "identical to dense" in text and "120 dB" in text


@pytest.mark.parametrize("amplitude", [0.01, 0.05, 0.2])
def test_known_noise_level_gives_the_expected_psnr(amplitude):
    ref = torch.full((9, 16, 16, 3), 0.5)
    noisy = ref + checkerboard(9, 16, 16, amplitude)
    expected = -20 * math.log10(amplitude)  # 10*log10(1 / amplitude**2)
    c = metrics.compare_videos(ref, noisy)
    assert c.psnr == pytest.approx(expected, abs=1e-3)
    assert all(p == pytest.approx(expected, abs=1e-3) for p in c.psnr_frames)
    assert c.psnr == tool_metrics.psnr(noisy, ref)
    assert c.ssim == pytest.approx(tool_metrics.ssim(noisy, ref), abs=1e-15) and c.ssim < 1.0
    assert c.temporal_error == pytest.approx(0.0, abs=1e-7)  # the same noise on every frame: the motion matches


def test_temporal_error_is_the_rms_of_the_motion_difference():
    ref = video(frames=6)
    drift = torch.arange(6).float()[:, None, None, None] * 0.01  # each frame 0.01 brighter than the last
    assert metrics.temporal_error(ref + drift, ref) == pytest.approx(0.01, rel=1e-4)
    assert math.isnan(metrics.temporal_error(ref[:1], ref[:1]))
    assert "n/a (one frame)" in metrics.format_report(metrics.compare_videos(ref[:1], ref[:1] * 0.9))


@pytest.mark.parametrize("chunk_values", [metrics.CHUNK_VALUES, 1])  # 1: one frame at a time, as for big frames
def test_chunked_metrics_equal_the_whole_video_formulas(chunk_values, monkeypatch):
    monkeypatch.setattr(metrics, "CHUNK_VALUES", chunk_values)
    a, b = video(frames=3 * metrics.CHUNK + 5, seed=1), video(frames=3 * metrics.CHUNK + 5, seed=2)
    b = (a + 0.1 * (b - 0.5)).clamp(0, 1)
    assert metrics.ssim(b, a) == pytest.approx(ssim_whole_video(b, a), abs=1e-14)
    mse = (b - a).pow(2).flatten(1).mean(1)
    assert metrics.psnr(b, a) == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), abs=1e-5)
    whole = float((b.diff(dim=0) - a.diff(dim=0)).double().pow(2).mean().sqrt())
    assert metrics.temporal_error(b, a) == pytest.approx(whole, rel=1e-9)


# ---- side-by-side video ------------------------------------------------------------------------
def test_side_by_side_shape_and_panels():
    ref, cand = video(frames=5, height=32, width=40), video(frames=5, height=32, width=40, seed=3)
    plain = metrics.side_by_side(ref, cand, gain=4.0, labels=False)
    gap = max(2, 40 // 64)
    assert plain.shape == (5, 32, 3 * 40 + 2 * gap, 3)
    assert torch.equal(plain[:, :, :40], ref) and torch.equal(plain[:, :, 40 + gap:80 + gap], cand)
    assert torch.allclose(plain[:, :, 80 + 2 * gap:], ((cand - ref).abs() * 4).clamp(0, 1))
    assert (plain[:, :, 40:40 + gap] == 1).all()  # white gaps between the panels
    labelled = metrics.side_by_side(ref, cand, 4.0, "dense", "RhymeFlow")
    bar = labelled.shape[1] - 32
    assert labelled.shape == (5, 32 + bar, plain.shape[2], 3) and 10 <= bar <= 60
    assert torch.equal(labelled[:, bar:], plain)
    assert labelled[:, :bar].max() > 0.5 and labelled[:, :bar].min() < 0.2  # light text on a dark strip
    assert torch.equal(labelled[0, :bar], labelled[-1, :bar])


# ---- errors ------------------------------------------------------------------------------------
def test_mismatched_videos_name_the_fix():
    ref = video(frames=9, height=16, width=24)
    with pytest.raises(RhymeFlowInputError, match=r"'dense' has 9 frames and 'RhymeFlow' 7: compare videos of the same length"):
        metrics.compare_videos(ref, video(frames=7, height=16, width=24), "dense", "RhymeFlow")
    with pytest.raises(RhymeFlowInputError, match=r"24x16 .*12x8.*Upscale Image node to 24x16"):
        metrics.compare_videos(ref, video(frames=9, height=8, width=12), "dense", "RhymeFlow")
    with pytest.raises(RhymeFlowInputError, match="alpha channel"):
        metrics.compare_videos(ref, torch.rand(9, 16, 24, 4))
    with pytest.raises(RhymeFlowInputError, match="not a batch of frames"):
        metrics.side_by_side(ref, ref[0])
    with pytest.raises(ValueError):  # the tools' contract: a ValueError for different shapes
        tool_metrics.compare(ref, ref[:3])


# ---- timing from run reports -------------------------------------------------------------------
def report(steps=10, full=5, step_seconds=None, source="15"):
    r = RunReport(steps=steps, frames=5, completed=True, full_passes=full, active_passes=steps - full, source=source)
    full_step = [True] * full + [False] * (steps - full)
    r.time_steps(step_seconds or [1.0 if f else 0.25 for f in full_step], full_step)
    r.sampler_seconds = sum(r.step_seconds) + 0.1
    return r


def test_timing_from_reports_estimates_dense_and_the_equal_time_steps():
    t = metrics.timing_from_reports([report()], "run report of RhymeFlow node 15")
    assert t.candidate_seconds == pytest.approx(6.25) and t.reference_seconds == pytest.approx(10.0)
    # 6.25 s at 1 s per full (dense) step: dense at 6.25 steps takes the same time; the view's cost model agrees.
    assert t.equal_time_steps == pytest.approx(6.25) and t.measured_active_cost == pytest.approx(0.25)
    assert t.assumed_active_cost == pytest.approx(0.109) and t.equal_cost_steps == pytest.approx(5 + 5 * 0.109)
    assert (t.full_passes, t.active_passes, t.steps) == (5, 5, 10)
    two = metrics.timing_from_reports([report(), report(source="16")], "x")  # two experts add up
    assert two.reference_seconds == pytest.approx(20.0) and two.steps == 20 and two.equal_time_steps == pytest.approx(12.5)
    assert metrics.timing_from_reports([RunReport(completed=False)], "x") is None
    c = metrics.compare_videos(video(), video(seed=5), "dense", "RhymeFlow", t)
    text = metrics.format_report(c)
    assert "RhymeFlow sampled 10 steps (5 full + 5 active passes) in 6.25 s" in text
    assert "dense would take about 10.00 s" in text and "saved about 3.75 s, 1.60x" in text
    assert "equal time: dense at 6 steps takes about as long as this run" in text and "run report of RhymeFlow node 15" in text
    assert "equal model cost" not in text  # time and cost agree (6 steps both): one line
    line = metrics.summary_line(c)
    assert line == (f"last comparison: PSNR {c.psnr:.2f} dB, SSIM {c.ssim:.4f} vs dense, saved about 3.75 s; "
                    "dense at 6 steps takes the same time")


def test_when_time_and_cost_disagree_the_report_shows_both():
    # Active steps at 0.6 of a full step (a small model on a CPU), where the view's table assumes 0.109.
    slow = report(step_seconds=[1.0] * 5 + [0.6] * 5)
    t = metrics.timing_from_reports([slow], "x")
    assert t.equal_time_steps == pytest.approx(8.0) and round(t.equal_cost_steps) == 6
    text = metrics.format_report(metrics.compare_videos(video(), video(seed=5), "dense", "RhymeFlow", t))
    assert "equal time: dense at 8 steps" in text
    assert "equal model cost (the schedule view's estimate, an active pass = 0.109 of a full one" in text
    assert "dense at 6 steps; time and cost disagree" in text and "an active step took 0.60 of a full one" in text


def test_summary_line_without_timing_and_for_identical_videos():
    a = video()
    assert metrics.summary_line(metrics.compare_videos(a, a.clone(), "dense", "x")) == \
        "last comparison: identical to dense, time not measured"
    typed = metrics.Timing(10.0, 12.5, "typed in")
    assert metrics.summary_line(metrics.compare_videos(a, video(seed=4), "dense", "x", typed)).endswith(", lost 2.50 s")


def compare_module():
    import nodes
    headless.load_nodes()
    return sys.modules[nodes.NODE_CLASS_MAPPINGS["RhymeFlowCompare"].__module__]


def test_candidate_timing_uses_only_runs_that_feed_the_candidate():
    mod = compare_module()
    prompt = {
        "15": {"class_type": "RhymeFlowSampler", "inputs": {}},
        "16": {"class_type": "SamplerCustomAdvanced", "inputs": {"sampler": ["15", 0]}},
        "17": {"class_type": "RhymeFlowDemoDecode", "inputs": {"samples": ["16", 0]}},
        "10": {"class_type": "SamplerCustomAdvanced", "inputs": {}},
        "18": {"class_type": "RhymeFlowDemoDecode", "inputs": {"samples": ["10", 0]}},
        "30": {"class_type": "RhymeFlowCompare", "inputs": {"reference": ["18", 0], "candidate": ["17", 0]}},
        "31": {"class_type": "RhymeFlowCompare", "inputs": {"reference": ["17", 0], "candidate": ["18", 0]}},
    }
    mod.REPORTS(report(source="15"))
    t = mod.candidate_timing(prompt, "30")
    assert t is not None and t.steps == 10 and "node 15" in t.source
    assert "cached result" in t.source  # outside an execution the run cannot be shown to be this prompt's
    assert mod.candidate_timing(prompt, "31") is None  # the RhymeFlow run feeds the reference, not the candidate
    assert mod.candidate_samplers(prompt, "30") == ["15"] and mod.candidate_samplers(prompt, "31") == []


def test_the_comparison_goes_to_the_views_of_the_samplers_it_judged(monkeypatch):
    from helpers import install_fake_server
    server = install_fake_server(monkeypatch)
    mod = compare_module()
    prompt = {"15": {"class_type": "RhymeFlowSampler", "inputs": {}},
              "16": {"class_type": "SamplerCustomAdvanced", "inputs": {"sampler": ["15", 0]}},
              "10": {"class_type": "SamplerCustomAdvanced", "inputs": {}},
              "30": {"class_type": "RhymeFlowCompare", "inputs": {"reference": ["10", 0], "candidate": ["16", 0]}},
              "31": {"class_type": "RhymeFlowCompare", "inputs": {"reference": ["16", 0], "candidate": ["10", 0]}}}
    c = metrics.compare_videos(video(), video(seed=5), "dense", "RhymeFlow")
    mod._tell_the_samplers(prompt, "30", c)
    mod._tell_the_samplers(prompt, "31", c)  # no RhymeFlow sampler behind this candidate: no view to tell
    ((event, data, sid),) = server.sent
    assert (event, sid, data["node"], data["samplers"]) == ("rhymeflow.compare", "client-1", "30", ["15"])
    assert data["line"] == metrics.summary_line(c) and data["comparison"]["psnr"] == c.psnr
    import json
    json.dumps(data, allow_nan=False)  # the websocket sends JSON
    mod._tell_the_samplers(prompt, "30", metrics.compare_videos(video()[:1], video(seed=5)[:1]))
    assert server.sent[-1][1]["comparison"]["temporal_error"] is None  # one frame: n/a, and still valid JSON
    json.dumps(server.sent[-1][1], allow_nan=False)
    assert mod.candidate_timing(None, "30") is None and mod.candidate_timing(prompt, "99") is None


# ---- through ComfyUI's executor ----------------------------------------------------------------
def solid(batch, color, width=48, height=32):
    return {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": batch, "color": color}}


def compare_node(**extra):
    return {"class_type": "RhymeFlowCompare", "inputs": {"reference": ["1", 0], "candidate": ["2", 0], "reference_name": "dense",
                                                         "candidate_name": "RhymeFlow", "difference_gain": 4.0, **extra}}


def test_compare_node_in_the_executor(tmp_path):
    # Every channel 10/255 apart: PSNR = 20*log10(255/10) = 28.13 dB on every frame.
    prompt = {"1": solid(5, 0x000000), "2": solid(5, 0x0A0A0A),
              "3": compare_node(reference_seconds=10.0, candidate_seconds=4.0),
              "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "cmp"}}}
    result = headless.run_prompt(prompt, tmp_path)
    assert result.success, result.error
    (text,) = result.outputs["3"]["text"]  # the node's UI text, as the browser gets it
    assert "RhymeFlow vs dense: 5 frames of 48x32" in text
    assert f"PSNR {20 * math.log10(25.5):.2f} dB" in text
    assert "time: dense 10.00 s, RhymeFlow 4.00 s (typed in): saved 6.00 s, 2.50x" in text
    saved = sorted(tmp_path.rglob("cmp_*.png"))
    assert len(saved) == 5
    from PIL import Image
    with Image.open(saved[0]) as im:
        width, height = im.size
    assert width == 3 * 48 + 2 * 2 and height > 32


def test_compare_node_refuses_different_lengths_with_our_message(tmp_path):
    prompt = {"1": solid(5, 0), "2": solid(4, 0), "3": compare_node()}
    result = headless.run_prompt(prompt, tmp_path)
    assert not result.success
    assert "RhymeFlowInputError" in result.error and "compare videos of the same length" in result.error
