// Drives the real ComfyUI frontend in headless Chromium for tests/test_browser.py.
// Usage: node drive.mjs <server url> <workflow.json> <screenshot.png>
// Prints one JSON line with what it saw; exits non-zero with a message on failure.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, workflowPath, screenshotPath] = process.argv.slice(2);
const workflow = JSON.parse(readFileSync(workflowPath, "utf8"));
const seen = { pageErrors: [], consoleErrors: [] };
const t0 = Date.now();
const mark = (name) => { seen[`${name}_ms`] = Date.now() - t0; };

async function api(path) {
  const res = await fetch(new URL(path, url));
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

// The view's data attributes, read through the node (whether or not its DOM element is on screen).
async function viewData(page, id) {
  return page.evaluate((id) => {
    const el = window.app.graph.getNodeById(id)?.rhymeflowView?.element;
    if (!el) return null;
    const canvas = el.querySelector("canvas");
    return { ...el.dataset, inDocument: el.isConnected, canvasWidth: canvas?.width ?? 0 };
  }, id);
}

async function waitView(page, id, wanted, timeout = 30_000) {
  const deadline = Date.now() + timeout;
  let data = null;
  while (Date.now() < deadline) {
    data = await viewData(page, id);
    if (data && Object.entries(wanted).every(([k, v]) => data[k] === v)) return data;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`schedule view of node ${id} never showed ${JSON.stringify(wanted)}; last: ${JSON.stringify(data)}`);
}

// Sets a widget as the canvas does when a user edits it: new value, then the widget's callback.
async function setWidget(page, nodeId, name, value) {
  await page.evaluate(([nodeId, name, value]) => {
    const node = window.app.graph.getNodeById(nodeId);
    const widget = node.widgets.find((w) => w.name === name);
    widget.value = value;
    widget.callback?.(value, window.app.canvas, node);
  }, [nodeId, name, value]);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  page.on("pageerror", (e) => seen.pageErrors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") seen.consoleErrors.push(m.text()); });
  await page.goto(url, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.app?.graph && window.app?.canvas, null, { timeout: 120_000 });
  mark("app_ready");

  // 1. Load the demo workflow; the schedule view renders from the server's data.
  await page.evaluate(async (wf) => { await window.app.loadGraphData(wf); }, workflow);
  const ids = await page.evaluate(() => {
    const nodes = window.app.graph._nodes ?? window.app.graph.nodes;
    const idOf = (type) => nodes.find((n) => n.comfyClass === type)?.id;
    return { sampler: idOf("RhymeFlowSampler"), scheduler: idOf("BasicScheduler") };
  });
  await page.evaluate((id) => {
    const node = window.app.graph.getNodeById(id);
    window.app.canvas.ds.scale = 1.0;
    window.app.canvas.centerOnNode?.(node);
    window.app.canvas.setDirty(true, true);
  }, ids.sampler);
  // The demo's own numbers (not the view's fallbacks before the graph is connected): 30 steps, 13 latent frames.
  seen.loaded = await waitView(page, ids.sampler, { state: "ready", steps: "30", frames: "13" });
  mark("view_rendered");

  // 2. Fewer steps for a quick run (the view follows the scheduler node upstream) ...
  await setWidget(page, ids.scheduler, "steps", 10);
  seen.fewerSteps = await waitView(page, ids.sampler, { steps: "10" }, 10_000);
  // ... and a new warm-up on the sampler itself: redrawn without queueing anything.
  const before = Date.now();
  await setWidget(page, ids.sampler, "warmup_steps", 3);
  seen.newWarmup = await waitView(page, ids.sampler, { warmup: "3" }, 10_000);
  seen.warmupUpdateMs = Date.now() - before;
  seen.queueDuringEdits = (await api("/api/queue")).queue_running.length;

  // 3. Queue the prompt and wait until it has finished, from the server's own history.
  const historyBefore = Object.keys(await api("/api/history")).length;
  await page.evaluate(async () => { await window.app.queuePrompt(0, 1); });
  let entry = null;
  for (let i = 0; i < 600 && !entry; i++) {
    await new Promise((r) => setTimeout(r, 500));
    const history = await api("/api/history");
    const entries = Object.values(history);
    if (entries.length > historyBefore) entry = entries[entries.length - 1];
  }
  if (!entry) throw new Error("the prompt did not finish within 5 minutes");
  seen.status = entry.status;
  mark("prompt_finished");

  // 4. The run's report arrives on the node: the keyframes actually chosen replace the planned ones.
  seen.afterRun = await waitView(page, ids.sampler, { keyframesSource: "chosen" });
  await page.waitForTimeout(500);
  await page.screenshot({ path: screenshotPath });
  seen.ids = ids;
  mark("done");
  console.log(JSON.stringify(seen));
} catch (e) {
  // What the page said is usually the reason: keep it with the failure.
  console.error(JSON.stringify({ pageErrors: seen.pageErrors, consoleErrors: seen.consoleErrors.slice(-20) }, null, 1));
  throw e;
} finally {
  await browser.close();
}
