"""Run API-format workflows through ComfyUI's real PromptExecutor, in process, without a server.

Used by `make demo` and the workflow tests. The executor reports progress to a server object;
`_Sink` collects those messages instead of sending them over a websocket.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """Short commit of the pack's checkout, for the records tools write ("unknown" outside git)."""
    import subprocess
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PACK_DIR, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def bootstrap(comfy_root: str | os.PathLike | None = None) -> Path:
    """Put the ComfyUI host on sys.path (COMFYUI_PATH, else the tree `make` set up) in CPU mode."""
    if comfy_root is None:
        comfy_root = os.environ.get("COMFYUI_PATH") or (PACK_DIR / ".host" / "comfyui_path").read_text().strip()
    root = Path(comfy_root).resolve()
    # The host goes first: ComfyUI's `nodes` module must win over this pack's `nodes/` folder.
    if str(PACK_DIR) not in sys.path:
        sys.path.insert(0, str(PACK_DIR))
    if str(root) in sys.path:
        sys.path.remove(str(root))
    sys.path.insert(0, str(root))
    # As main.py does before anything imports `nodes` (which puts comfy/ first on sys.path, where
    # comfy/utils.py would shadow the host's `utils` package that server.py and nodes_images need).
    import comfy.cli_args
    import utils.extra_config  # noqa: F401
    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.disable_smart_memory = True
    return root


class _Sink:
    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: list = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


@dataclass
class PromptResult:
    success: bool
    outputs: dict
    messages: list = field(default_factory=list)
    error: str = ""


_loaded = False


def load_nodes() -> None:
    """Load core nodes plus this pack (once), as ComfyUI's start-up does."""
    global _loaded
    if _loaded:
        return
    import nodes
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    if "RhymeFlowSampler" not in nodes.NODE_CLASS_MAPPINGS:
        asyncio.run(nodes.load_custom_node(str(PACK_DIR)))
    if "RhymeFlowSampler" not in nodes.NODE_CLASS_MAPPINGS:
        raise RuntimeError("ComfyUI did not load the RhymeFlow nodes; see the log above")
    _loaded = True


@contextlib.contextmanager
def observe_reports():
    """The RhymeFlow run reports (rhymeflow_core/report.py) of every run that closes inside the block.

    Two copies of the pack's modules can run in one process: the one ComfyUI imported as a custom
    node (a package named after the pack's folder; workflows run through it) and `rhymeflow_core`
    imported by tools and tests. Each has its own observer hook, so subscribe to both.
    """
    load_nodes()
    import rhymeflow_core.report  # noqa: F401  (the tools' copy)
    target = (PACK_DIR / "rhymeflow_core" / "report.py").resolve()
    copies = {id(m): m for m in list(sys.modules.values())
              if getattr(m, "__file__", None) and Path(m.__file__).resolve() == target}
    reports: list = []
    with contextlib.ExitStack() as stack:
        for module in copies.values():
            stack.enter_context(module.observe(reports.append))
        yield reports


def run_prompt(prompt: dict, output_dir: str | os.PathLike | None = None, on_progress=None) -> PromptResult:
    """Validate and execute an API prompt; `on_progress(value, total)` sees every ProgressBar update."""
    import execution
    import folder_paths

    load_nodes()
    if output_dir is not None:
        folder_paths.set_output_directory(str(output_dir))
    prompt_id = str(uuid.uuid4())
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    if not valid:
        details = "; ".join(f"{e['message']}: {e['details']}" for n in node_errors.values() for e in n["errors"])
        return PromptResult(False, {}, error=f"{error.get('message', '')} {details}".strip())
    sink = _Sink()
    import comfy.utils
    # What main.py's hijack_progress forwards to the browser: ProgressBar updates per node.
    def hook(value, total, preview, prompt_id=None, node_id=None):
        sink.messages.append(("progress", {"value": value, "max": total, "node": node_id, "preview": preview is not None}))
        if on_progress is not None:
            on_progress(value, total)

    comfy.utils.set_progress_bar_global_hook(hook)
    cache_args = {"lru": 0, "ram": 0.0, "ram_inactive": 0.0}  # ram_inactive: v0.33+
    executor = execution.PromptExecutor(sink, cache_type=execution.CacheType.NONE, cache_args=cache_args)
    executor.execute(prompt, prompt_id, {"client_id": "headless"}, outputs)
    message = ""
    for event, data in executor.status_messages:
        if event == "execution_error":
            message = f"{data.get('exception_type')}: {data.get('exception_message')}"
    return PromptResult(executor.success, executor.history_result.get("outputs", {}) if executor.success else {},
                        sink.messages, message)
