"""The schedule view in the real ComfyUI frontend: server + headless Chromium (tests/browser/drive.mjs).

Needs Debian's chromium, node and tests/browser/node_modules (`npm ci` there; tools/setup_host.sh does
it when npm exists). Skipped with the reason when they are missing, except under
RHYMEFLOW_REQUIRE_BROWSER=1 (set by .ci/run), where a missing piece fails the test.
The screenshot is kept in output/test-artifacts/.
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


def _missing() -> list[str]:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append("chromium (apt-get install chromium)")
    if shutil.which("node") is None:
        missing.append("node")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("playwright-core (npm ci in tests/browser)")
    return missing


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


@pytest.fixture(scope="module")
def comfy_server(tmp_path_factory):
    missing = _missing()
    if missing:
        message = "browser test needs " + ", ".join(missing)
        if os.environ.get("RHYMEFLOW_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from conftest import COMFY_ROOT

    base = tmp_path_factory.mktemp("comfy-base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "ComfyUI-RhymeFlow").symlink_to(PACK_DIR, target_is_directory=True)
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    # A returning user: no first-run template browser over the canvas.
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    port = _free_port()
    log = base / "comfyui.log"
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
           "--disable-auto-launch", "--disable-api-nodes"]
    with log.open("w") as out:
        server = subprocess.Popen(cmd, cwd=COMFY_ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, server, log)
        yield url, log
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
def test_schedule_view_in_the_browser(comfy_server):
    url, log = comfy_server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "browser-schedule-view.png"
    workflow = PACK_DIR / "example_workflows" / "rhymeflow_demo.json"
    started = time.monotonic()
    done = subprocess.run(["node", str(BROWSER_DIR / "drive.mjs"), url, str(workflow), str(screenshot)], cwd=BROWSER_DIR,
                          capture_output=True, text=True, timeout=420, env={**os.environ, "CHROMIUM_PATH": CHROMIUM})
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n--- server log ---\n{log.read_text()[-4000:]}"
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"browser test: {time.monotonic() - started:.1f} s, screenshot {screenshot}")

    loaded = seen["loaded"]  # the demo workflow: 30 steps, 49 pixel frames (13 latent), warm-up 6, strides 3-5
    assert (loaded["steps"], loaded["frames"], loaded["warmup"], loaded["full"], loaded["active"]) == ("30", "13", "6", "13", "17")
    assert loaded["roles"].split(",")[:7] == ["warmup"] * 6 + ["rhythmic"]
    assert loaded["keyframes"] == "0,12" and loaded["keyframesSource"] == "planned"
    assert loaded["inDocument"] and loaded["canvasWidth"] > 0  # drawn on the page

    fewer, new = seen["fewerSteps"], seen["newWarmup"]
    assert len(fewer["roles"].split(",")) == 10
    assert new["warmup"] == "3" and new["roles"].split(",")[:4] == ["warmup"] * 3 + ["rhythmic"]
    assert (new["full"], new["active"]) == ("5", "5")  # 10 steps, warm-up 3, strides 3-5: groups [3, 6) and [6, 10)
    assert seen["warmupUpdateMs"] < 3000 and seen["queueDuringEdits"] == 0  # redrawn without queueing

    assert seen["status"]["status_str"] == "success" and seen["status"]["completed"]
    after = seen["afterRun"]
    report = json.loads(after["report"])
    assert after["keyframesSource"] == "chosen" and report["keyframes"] == [0, 12]
    assert (report["full_passes"], report["active_passes"], report["steps"]) == (5, 5, 10)
    assert report["sampler_seconds"] > 0 and "seconds_saved" in report
    # The frontend looks our node ids up on api.comfy.org (blocked offline by its own CSP): not ours.
    ours = [e for e in seen["pageErrors"] + seen["consoleErrors"] if "rhymeflow" in e.lower() and "api.comfy.org" not in e]
    assert not ours
    assert screenshot.stat().st_size > 10_000
