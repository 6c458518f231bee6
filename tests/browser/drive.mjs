// Drives the real ComfyUI frontend in headless Chromium for tests/test_browser.py.
// Usage: node drive.mjs '<json options>' with
//   url         the ComfyUI server
//   workflow    the demo workflow (UI format); ltxWorkflow: the LTX-Video one (drawn only, never run)
//   screenshot  where to save the last screenshot
//   mode        "classic" (litegraph canvas) or "vue" (Nodes 2.0: nodes and widgets are DOM elements)
//   run         queue the demo prompt and check the after-run report (true / false)
// Prints one JSON line with what it saw; exits non-zero with a message on failure.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";

const options = JSON.parse(process.argv[2]);
const { url, screenshot, mode } = options;
const workflow = JSON.parse(readFileSync(options.workflow, "utf8"));
const ltxWorkflow = JSON.parse(readFileSync(options.ltxWorkflow, "utf8"));
const seen = { mode, pageErrors: [], consoleErrors: [], edits: [] };
const t0 = Date.now();
const mark = (name) => { seen[`${name}_ms`] = Date.now() - t0; };

async function api(path, init) {
  const res = await fetch(new URL(path, url), init);
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    return text; // POST /api/settings/... answers with no JSON
  }
}

// The view's data attributes, read through the node (whether or not its DOM element is on screen).
async function viewData(page, id) {
  return page.evaluate((id) => {
    const el = window.app.graph.getNodeById(id)?.rhymeflowView?.element;
    if (!el) return null;
    const canvas = el.querySelector("canvas");
    const box = el.getBoundingClientRect();
    return {
      ...el.dataset, inDocument: el.isConnected, canvasWidth: canvas?.width ?? 0, shownWidth: box.width, shownHeight: box.height,
      text: el.querySelector(".rhymeflow-info")?.textContent ?? "", legend: el.querySelectorAll(".rhymeflow-legend > span").length,
    };
  }, id);
}

async function waitView(page, id, wanted, timeout = 30_000) {
  const deadline = Date.now() + timeout;
  let data = null;
  while (Date.now() < deadline) {
    data = await viewData(page, id);
    const ok = ([k, v]) => (typeof v === "function" ? v(data[k]) : data[k] === v); // v undefined: the attribute is absent
    if (data && Object.entries(wanted).every(ok)) return data;
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

// An edit as a user makes it. In Vue mode numbers are typed into the node's own input element (found
// by data-widget-name, which frontends before about 1.40 do not set); on the classic canvas (drawn,
// no DOM to type into) and where no such element exists, the canvas's path is used.
async function edit(page, nodeId, name, value) {
  const input = page.locator(`[data-node-id="${nodeId}"] [data-widget-name="${name}"] input`).first();
  if (mode === "vue" && typeof value === "number" && (await input.count()) > 0) {
    await input.fill(String(value), { force: true }); // a scrubbing overlay sits over the input
    await input.press("Enter");
    const now = await page.evaluate(([nodeId, name]) =>
      window.app.graph.getNodeById(nodeId).widgets.find((w) => w.name === name).value, [nodeId, name]);
    if (now !== value) throw new Error(`typing ${value} into ${name} of node ${nodeId} left it at ${now}`);
    seen.edits.push(`${name}: typed`);
  } else {
    await setWidget(page, nodeId, name, value);
    seen.edits.push(`${name}: set`);
  }
}

async function center(page, id) {
  await page.evaluate((id) => {
    const node = window.app.graph.getNodeById(id);
    window.app.canvas.ds.scale = 1.0;
    window.app.canvas.centerOnNode?.(node);
    window.app.canvas.setDirty(true, true);
  }, id);
  await page.waitForTimeout(300);
}

async function load(page, wf) {
  await page.evaluate(async (wf) => { await window.app.loadGraphData(wf); }, wf);
  return page.evaluate(() => {
    const nodes = window.app.graph.nodes ?? window.app.graph._nodes;
    const idOf = (type) => nodes.find((n) => n.comfyClass === type)?.id;
    return { sampler: idOf("RhymeFlowSampler"), scheduler: idOf("BasicScheduler"), keyframes: idOf("RhymeFlowKeyframes"),
      compare: idOf("RhymeFlowCompare") };
  });
}

// The preset-controlled widgets as the user sees them: disabled flag, and in Vue mode the DOM controls.
async function presetWidgets(page, id) {
  return page.evaluate(([id, vue]) => {
    const node = window.app.graph.getNodeById(id);
    const out = {};
    for (const w of node.widgets) {
      if (w.name === "rhymeflow_schedule") continue;
      const row = vue ? document.querySelector(`[data-node-id="${id}"] [data-widget-name="${w.name}"]`) : null;
      out[w.name] = { disabled: Boolean(w.disabled), domDisabled: row ? row.querySelectorAll("input:disabled, button:disabled").length : null };
    }
    const saved = window.app.graph.serialize().nodes.find((n) => String(n.id) === String(id));
    return { widgets: out, widgetsValues: JSON.stringify(saved.widgets_values), savedKeys: Object.keys(saved).sort().join(",") };
  }, [id, mode === "vue"]);
}

// The compare node's report as the user sees it (the widget's value, and the text box on the page), once it came.
async function compareText(page, id, timeout = 30_000) {
  const deadline = Date.now() + timeout;
  let data = null;
  while (Date.now() < deadline) {
    data = await page.evaluate((id) => {
      const node = window.app.graph.getNodeById(id);
      const widget = node?.widgets?.find((w) => w.name === "rhymeflow_report");
      const box = document.querySelector(`[data-node-id="${id}"] textarea`) ?? widget?.element;
      const saved = window.app.graph.serialize().nodes.find((n) => String(n.id) === String(id));
      return { value: widget?.value ?? null, shown: box?.value ?? null, inDocument: Boolean(box?.isConnected),
        savedValues: JSON.stringify(saved?.widgets_values) };
    }, id);
    if (data.value?.includes("PSNR") && data.shown?.includes("PSNR")) return data;
    await new Promise((r) => setTimeout(r, 200));
  }
  return data; // the test says what is missing
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  // The node design is a user setting (stored by the server): set it before the page loads.
  await api(`/api/settings/Comfy.VueNodes.Enabled`, { method: "POST", body: JSON.stringify(mode === "vue") });
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  page.on("pageerror", (e) => seen.pageErrors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") seen.consoleErrors.push(m.text()); });
  await page.goto(url, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.app?.graph && window.app?.canvas, null, { timeout: 120_000 });
  seen.frontend = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  seen.vueSetting = await page.evaluate(() => window.app.extensionManager?.setting?.get?.("Comfy.VueNodes.Enabled") ?? null);
  mark("app_ready");

  // 1. The LTX-Video workflow: 97 pixel frames are 13 latent frames (8x in time), as the host makes them.
  const ltx = await load(page, ltxWorkflow);
  seen.ltx = await waitView(page, ltx.sampler, { state: "ready", steps: "30", frames: "13" });

  // 1b. A workflow saved before the preset input existed (7 widget values) loads as custom, as it ran; a sampler
  // node dropped on the canvas starts with the default preset, balanced.
  const old = structuredClone(workflow);
  const oldSampler = old.nodes.find((n) => n.type === "RhymeFlowSampler");
  oldSampler.widgets_values = oldSampler.widgets_values.slice(0, 7);
  const oldIds = await load(page, old);
  seen.oldWorkflow = await waitView(page, oldIds.sampler, { state: "ready", steps: "30", frames: "13" });
  seen.oldWorkflow.preset = await page.evaluate((id) =>
    window.app.graph.getNodeById(id).widgets.find((w) => w.name === "preset").value, oldIds.sampler);
  seen.newNodePreset = await page.evaluate(() =>
    window.LiteGraph?.createNode?.("RhymeFlowSampler")?.widgets?.find((w) => w.name === "preset")?.value ?? null);

  // 2. The demo workflow; the schedule view renders from the server's data.
  const ids = await load(page, workflow);
  await center(page, ids.sampler);
  seen.vueNodeElements = await page.evaluate(() => document.querySelectorAll("[data-node-id]").length);
  // The demo's own numbers (not the fallbacks before the graph is connected): 30 steps, 13 latent frames.
  seen.loaded = await waitView(page, ids.sampler, { state: "ready", steps: "30", frames: "13" });
  mark("view_rendered");

  // 3. Fewer steps for a quick run (the view follows the scheduler node upstream) ...
  await edit(page, ids.scheduler, "steps", 10);
  seen.fewerSteps = await waitView(page, ids.sampler, { steps: "10" }, 10_000);
  // ... and a new warm-up on the sampler itself: redrawn without queueing anything.
  const before = Date.now();
  await edit(page, ids.sampler, "warmup_steps", 3);
  seen.newWarmup = await waitView(page, ids.sampler, { warmup: "3" }, 10_000);
  seen.warmupUpdateMs = Date.now() - before;
  // Warm-up 0 still draws step 0 as warm-up, and says so.
  await edit(page, ids.sampler, "warmup_steps", 0);
  seen.noWarmup = await waitView(page, ids.sampler, { warmup: "1" }, 10_000);
  await edit(page, ids.sampler, "warmup_steps", 3);
  await waitView(page, ids.sampler, { warmup: "3" }, 10_000);
  seen.queueDuringEdits = (await api("/api/queue")).queue_running.length;
  // 3b. Partial passes: a refresh budget draws refreshed non-keyframe cells in active columns, and back.
  await setWidget(page, ids.sampler, "refresh_budget", 0.25);
  seen.partial = await waitView(page, ids.sampler, { refreshes: (v) => Number(v) > 0 }, 10_000);
  await setWidget(page, ids.sampler, "refresh_budget", 0);
  seen.noPartial = await waitView(page, ids.sampler, { refreshes: "0" }, 10_000);

  // 4. Errors replace the drawing: a bad manual keyframe list, then an empty one, then fixed again.
  // Changes on the keyframes node are polled: a poll between two edits shows the first one's error (strategy
  // manual with the empty list), so wait for the error of the value typed, not just for an error.
  await setWidget(page, ids.keyframes, "strategy", "manual");
  await setWidget(page, ids.keyframes, "manual_frames", "0,,x");
  seen.badManual = await waitView(page, ids.sampler,
    { state: "error", roles: undefined, error: (e) => e?.includes("is not a frame number") }, 10_000);
  await setWidget(page, ids.keyframes, "manual_frames", "");
  seen.emptyManual = await waitView(page, ids.sampler, { state: "error", error: (e) => e?.includes("needs a frame list") }, 10_000);
  await center(page, ids.sampler);
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-error.png") });
  await setWidget(page, ids.keyframes, "strategy", "semantic");
  seen.fixed = await waitView(page, ids.sampler, { state: "ready", warmup: "3", steps: "10" }, 10_000);

  // 5. A preset greys out the widgets it overrides (their values stay, for custom), and custom brings them back.
  const custom = await presetWidgets(page, ids.sampler);
  await setWidget(page, ids.sampler, "preset", "fast");
  seen.preset = await waitView(page, ids.sampler, { state: "ready", warmup: "2" }, 10_000); // fast: 15% of 10 steps
  await page.waitForTimeout(300);
  seen.presetWidgets = await presetWidgets(page, ids.sampler);
  await center(page, ids.sampler);
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-preset.png") });
  await setWidget(page, ids.sampler, "preset", "custom");
  seen.custom = await waitView(page, ids.sampler, { state: "ready", warmup: "3", presetControlled: "" }, 10_000);
  await page.waitForTimeout(300);
  seen.customWidgets = await presetWidgets(page, ids.sampler);
  seen.customWidgetsBefore = custom;

  // 6. Queue the prompt (the RhymeFlow branch only: the dense one's outputs are muted) and wait for the server's history.
  if (options.run) {
    await page.evaluate((samplerId) => {
      const graph = window.app.graph;
      const nodes = graph.nodes ?? graph._nodes;
      const sampler = graph.getNodeById(samplerId);
      const runner = (sampler.getOutputNodes?.(0) ?? [])[0];
      const keep = new Set();
      const down = (n) => {
        if (keep.has(n.id)) return;
        keep.add(n.id);
        (n.outputs ?? []).forEach((_, slot) => (n.getOutputNodes?.(slot) ?? []).forEach(down));
      };
      down(runner);
      // A seed of its own: the server caches a prompt it has run before, and a cached sampler sends no report.
      for (const n of nodes) {
        const seed = n.widgets?.find((w) => w.name === "noise_seed");
        if (seed) seed.value = Math.floor(Math.random() * 1e9);
      }
      let muted = 0;
      for (const n of nodes) {
        if (n.constructor?.nodeData?.output_node && !keep.has(n.id)) {
          n.mode = 2; // NEVER
          muted++;
        }
      }
      return muted;
    }, ids.sampler).then((n) => { seen.mutedOutputs = n; });
    const historyBefore = Object.keys(await api("/api/history")).length;
    await page.evaluate(async () => { await window.app.queuePrompt(0, 1); });
    let entry = null;
    for (let i = 0; i < 600 && !entry; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const entries = Object.values(await api("/api/history"));
      if (entries.length > historyBefore) entry = entries[entries.length - 1];
    }
    if (!entry) throw new Error("the prompt did not finish within 5 minutes");
    seen.status = entry.status;
    mark("prompt_finished");
    // The run's report arrives on the node: the keyframes actually chosen replace the planned ones.
    seen.afterRun = await waitView(page, ids.sampler, { keyframesSource: "chosen" });
    // RhymeFlow Compare Videos judged the RhymeFlow video: its text on the compare node, its summary on the view.
    seen.afterCompare = await waitView(page, ids.sampler, { comparison: (c) => c?.startsWith("last comparison:") });
    await center(page, ids.compare); // the classic canvas keeps off-screen DOM widgets out of the page
    seen.compareNode = await compareText(page, ids.compare);
    await page.screenshot({ path: screenshot.replace(/\.png$/, "-compare.png") });
  }
  await center(page, ids.sampler);
  await page.waitForTimeout(500);
  await page.screenshot({ path: screenshot });
  seen.ids = ids;
  mark("done");
  console.log(JSON.stringify(seen));
} catch (e) {
  // What the page said is usually the reason: keep it with the failure.
  console.error(JSON.stringify({ seen, consoleErrors: seen.consoleErrors.slice(-20) }, null, 1));
  throw e;
} finally {
  await browser.close();
}
