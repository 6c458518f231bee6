"""The schedule view in the real ComfyUI frontend: server + headless Chromium (tests/browser/drive.mjs).

Two frontends, each on its own server: the one the host pins (its requirements.txt; ComfyUI 0.3.75:
comfyui-frontend-package 1.32.9) and the newest one tools/setup_host.sh installs from PyPI into
.host/frontend/<version>/ (started with --front-end-root). The newest is driven with the classic
canvas and with Vue nodes ("Nodes 2.0"); the pinned one with the classic canvas, and with Vue nodes
without a run (it is an experimental setting there).

Needs Debian's chromium, node and tests/browser/node_modules (`npm ci` there; tools/setup_host.sh does
it when npm exists). Skipped with the reason when they are missing, except under
RHYMEFLOW_REQUIRE_BROWSER=1 (set by .ci/run), where a missing piece fails the test.
RHYMEFLOW_FRONTEND_ROOT=<.../comfyui_frontend_package/static> picks another "newest" frontend.
Screenshots are kept in output/test-artifacts/.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tools.headless import PACK_DIR

BROWSER_DIR = PACK_DIR / "tests" / "browser"
ARTIFACTS = PACK_DIR / "output" / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
REQUIRED = os.environ.get("RHYMEFLOW_REQUIRE_BROWSER") == "1"


def _missing() -> list[str]:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append("chromium (apt-get install chromium)")
    if shutil.which("node") is None:
        missing.append("node")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("playwright-core (npm ci in tests/browser)")
    return missing


def _version_key(path: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in path.name.split("."))


def newest_frontend() -> tuple[Path, str] | None:
    """(static folder, version) of the newest frontend installed by tools/setup_host.sh, if any."""
    env = os.environ.get("RHYMEFLOW_FRONTEND_ROOT")
    if env:
        root = Path(env)
        info = next(root.parent.parent.glob("comfyui_frontend_package-*.dist-info"), None)
        return root, info.name.split("-")[1].removesuffix(".dist-info") if info else "?"
    folders = sorted((PACK_DIR / ".host" / "frontend").glob("*/comfyui_frontend_package/static"),
                     key=lambda p: _version_key(p.parent.parent))
    return (folders[-1], folders[-1].parent.parent.name) if folders else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, server: subprocess.Popen, log: Path, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/object_info/RhymeFlowSampler", timeout=5) as r:
                if json.load(r).get("RhymeFlowSampler"):
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"ComfyUI did not answer within {seconds} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module", params=["pinned", "newest"])
def comfy_server(request, tmp_path_factory):
    """(url, server log, frontend name, version) of a ComfyUI server with this pack and that frontend."""
    missing = _missing()
    frontend_args, version = [], None
    if request.param == "newest":
        found = newest_frontend()
        if found is None:
            missing.append("the newest frontend (tools/setup_host.sh installs it in .host/frontend/)")
        else:
            frontend_args, version = ["--front-end-root", str(found[0])], found[1]
    if missing:
        message = "browser test needs " + ", ".join(missing)
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    from conftest import COMFY_ROOT
    if version is None:  # the package the host's own requirements installed into this venv
        from importlib.metadata import version as installed
        version = installed("comfyui-frontend-package")

    base = tmp_path_factory.mktemp(f"comfy-{request.param}")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "ComfyUI-RhymeFlow").symlink_to(PACK_DIR, target_is_directory=True)
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    # A returning user: no first-run template browser over the canvas.
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    port = _free_port()
    log = base / "comfyui.log"
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
           "--disable-auto-launch", "--disable-api-nodes", *frontend_args]
    with log.open("w") as out:
        server = subprocess.Popen(cmd, cwd=COMFY_ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, server, log)
        yield url, log, request.param, version
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["classic", "vue"])
def test_schedule_view_in_the_browser(comfy_server, mode):
    url, log, frontend, version = comfy_server
    run = not (frontend == "pinned" and mode == "vue")  # one run per frontend and mode, except the pinned Vue preview
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / f"browser-schedule-view-{frontend}-{mode}.png"
    options = {"url": url, "workflow": str(PACK_DIR / "example_workflows" / "rhymeflow_demo.json"),
               "ltxWorkflow": str(PACK_DIR / "example_workflows" / "rhymeflow_ltxv.json"),
               "screenshot": str(screenshot), "mode": mode, "run": run}
    started = time.monotonic()
    done = subprocess.run(["node", str(BROWSER_DIR / "drive.mjs"), json.dumps(options)], cwd=BROWSER_DIR,
                          capture_output=True, text=True, timeout=480, env={**os.environ, "CHROMIUM_PATH": CHROMIUM})
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n--- server log ---\n{log.read_text()[-4000:]}"
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"browser test, frontend {frontend} {version}, {mode}: {time.monotonic() - started:.1f} s, screenshot {screenshot}")
    assert seen["vueSetting"] in (mode == "vue", None)
    if mode == "vue":
        assert seen["vueNodeElements"] > 10, "Vue nodes were not rendered as DOM elements"
    if mode == "vue" and frontend == "newest":
        assert any(e.endswith(": typed") for e in seen["edits"])  # numbers typed into the nodes' own inputs

    # The LTX-Video workflow: 97 pixel frames -> 13 latent frames (8x in time), from Python.
    ltx = seen["ltx"]
    assert (ltx["steps"], ltx["frames"]) == ("30", "13") and "EmptyLTXVLatentVideo: 97 pixel frames" in ltx["text"]

    # A sampler saved before presets existed loads as custom with its own warm-up; a new one starts at balanced.
    old = seen["oldWorkflow"]
    assert old["preset"] == "custom" and (old["warmup"], old["presetControlled"]) == ("6", "")
    assert seen["newNodePreset"] == "balanced"

    loaded = seen["loaded"]  # the demo workflow: 30 steps, 49 pixel frames (13 latent), warm-up 6, strides 3-5
    assert (loaded["steps"], loaded["frames"], loaded["warmup"], loaded["full"], loaded["active"]) == ("30", "13", "6", "13", "17")
    assert loaded["roles"].split(",")[:7] == ["warmup"] * 6 + ["rhythmic"]
    assert loaded["keyframes"] == "0,12" and loaded["keyframesSource"] == "planned"
    assert loaded["inDocument"] and loaded["canvasWidth"] > 0 and loaded["shownWidth"] > 0  # drawn on the page
    assert loaded["legend"] == 5 and "30 steps (BasicScheduler) x 13 latent frames" in loaded["text"]

    fewer, new = seen["fewerSteps"], seen["newWarmup"]
    assert len(fewer["roles"].split(",")) == 10
    assert new["warmup"] == "3" and new["roles"].split(",")[:4] == ["warmup"] * 3 + ["rhythmic"]
    assert (new["full"], new["active"]) == ("5", "5")  # 10 steps, warm-up 3, strides 3-5: groups [3, 6) and [6, 10)
    assert seen["warmupUpdateMs"] < 3000 and seen["queueDuringEdits"] == 0  # redrawn without queueing
    # Partial passes: 11 non-keyframes x 0.25 x 5 active passes = 13.75, i.e. 14 refreshed cells in the active columns.
    partial, no_partial = seen["partial"], seen["noPartial"]
    assert partial["refreshes"] == "14" and partial["legend"] == 6 and no_partial["legend"] == 5
    assert "partial passes: refresh_budget 0.25 of 11 non-keyframes, 14 refreshes over 5 active passes" in partial["text"]
    no_warmup = seen["noWarmup"]  # warm-up 0: step 0 is drawn as warm-up, and the caption says why
    assert no_warmup["roles"].split(",")[0] == "warmup" and "warm-up 1 (warmup_steps 0" in no_warmup["text"]

    # Errors replace the drawing (no stale roles), and say what to fix, once.
    bad, empty = seen["badManual"], seen["emptyManual"]
    assert "'x' is not a frame number" in bad["error"] and "roles" not in bad and bad["text"].count("is not a frame number") == 1
    assert "needs a frame list" in empty["error"] and "needs a frame list" in empty["text"]
    assert seen["fixed"]["state"] == "ready"

    # A preset greys out (disables) exactly the widgets it overrides; custom re-enables them; nothing saved changes.
    controlled = ["warmup_steps", "min_stride", "max_stride", "transition_1", "transition_2", "stride_schedule"]
    assert seen["preset"]["presetControlled"].split(",") == controlled and "preset fast at 10 steps" in seen["preset"]["text"]
    greyed = seen["presetWidgets"]["widgets"]
    assert [name for name, w in greyed.items() if w["disabled"]] == controlled
    if mode == "vue" and frontend == "newest":  # 1.32's Vue preview greys linked widgets only
        assert all(greyed[name]["domDisabled"] for name in controlled) and not greyed["solver"]["domDisabled"]
    assert not any(w["disabled"] for w in seen["customWidgets"]["widgets"].values())
    for state in ("presetWidgets", "customWidgets"):
        assert seen[state]["savedKeys"] == seen["customWidgetsBefore"]["savedKeys"]  # no label / disabled saved
    assert json.loads(seen["presetWidgets"]["widgetsValues"])[1:7] == json.loads(seen["customWidgetsBefore"]["widgetsValues"])[1:7]

    if run:
        assert seen["status"]["status_str"] == "success" and seen["status"]["completed"]
        after = seen["afterRun"]
        report = json.loads(after["report"])
        assert after["keyframesSource"] == "chosen" and report["keyframes"] == [0, 12]
        assert (report["full_passes"], report["active_passes"], report["steps"]) == (5, 5, 10)
        assert report["sampler_seconds"] > 0 and "seconds_saved" in report
        (last,) = [line for line in json.loads(after["lines"]) if line.startswith("last run:")]  # the comparison may follow
        assert last.startswith("last run: 5 full / 5 active passes") and ("saved about" in last or "slower by" in last)
        # The demo's RhymeFlow Compare Videos judged this run: its text on the node, its summary on the view.
        line = seen["afterCompare"]["comparison"]
        assert line.startswith("last comparison: PSNR ") and " dB, SSIM " in line and "vs dense" in line
        assert "steps takes the same time" in line and json.loads(seen["afterCompare"]["lines"])[-1] == line
        assert line in seen["afterCompare"]["text"]  # on the page, under the drawing
        shown = seen["compareNode"]
        assert shown["value"].startswith("RhymeFlow vs dense: 13 frames of 128x128") and "equal time: dense at" in shown["value"]
        assert shown["shown"] == shown["value"] and shown["inDocument"]
        assert "PSNR" not in shown["savedValues"]  # the text box is not saved with the workflow
    # The frontend looks our node ids up on api.comfy.org (blocked offline by its own CSP): not ours.
    ours = [e for e in seen["pageErrors"] + seen["consoleErrors"] if "rhymeflow" in e.lower() and "api.comfy.org" not in e]
    assert not ours
    assert screenshot.stat().st_size > 10_000
