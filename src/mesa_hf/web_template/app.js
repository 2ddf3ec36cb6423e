// MeSa depth in the browser: the processing of mesa_hf.onnx.OnnxDepthEstimator, re-done in JS, on onnxruntime-web.
import * as ort from "./ort/ort.min.mjs";

const $ = (id) => document.getElementById(id);
const f32 = Math.fround;
const state = { session: null, config: null, backend: "", busy: false };

function showMessage(text) { $("message").textContent = text; }

// Python's round(): half to even (numpy rint, builtin round)
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// mesa_hf.onnx.fit_size
function fitSize(h, w, th, tw) {
  const s = Math.min(th / h, tw / w);
  return [Math.min(th, Math.max(1, roundHalfEven(h * s))), Math.min(tw, Math.max(1, roundHalfEven(w * s)))];
}

// PIL's bicubic resampling (ImagingResample: a = -0.5, support 2 x downscale, 22-bit fixed-point coefficients,
// horizontal pass then vertical, each rounded and clipped to uint8)
const PRECISION_BITS = 22;
function bicubic(x) {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}
function resampleCoefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 2 * filterscale;
  const bounds = [], coefficients = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const k = new Float64Array(xmax);
    let ww = 0;
    for (let x = 0; x < xmax; x++) { k[x] = bicubic((x + xmin - center + 0.5) * ss); ww += k[x]; }
    const ints = new Int32Array(xmax);
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? k[x] / ww : k[x];
      ints[x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    bounds.push([xmin, xmax]);
    coefficients.push(ints);
  }
  return { bounds, coefficients };
}
function clip8(sum) {
  const v = Math.floor(sum / (1 << PRECISION_BITS));
  return v < 0 ? 0 : v > 255 ? 255 : v;
}
// rgb: Uint8Array (h, w, 3) -> (outH, outW, 3)
function resizeBicubicPIL(rgb, h, w, outH, outW) {
  let src = rgb, sw = w;
  if (outW !== w) {
    const { bounds, coefficients } = resampleCoefficients(w, outW);
    const out = new Uint8Array(h * outW * 3);
    for (let y = 0; y < h; y++) for (let xx = 0; xx < outW; xx++) {
      const [xmin, n] = bounds[xx], k = coefficients[xx];
      for (let c = 0; c < 3; c++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let x = 0; x < n; x++) ss += src[(y * w + xmin + x) * 3 + c] * k[x];
        out[(y * outW + xx) * 3 + c] = clip8(ss);
      }
    }
    src = out; sw = outW;
  }
  if (outH !== h) {
    const { bounds, coefficients } = resampleCoefficients(h, outH);
    const out = new Uint8Array(outH * sw * 3);
    for (let yy = 0; yy < outH; yy++) {
      const [ymin, n] = bounds[yy], k = coefficients[yy];
      for (let x = 0; x < sw; x++) for (let c = 0; c < 3; c++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let y = 0; y < n; y++) ss += src[((ymin + y) * sw + x) * 3 + c] * k[y];
        out[(yy * sw + x) * 3 + c] = clip8(ss);
      }
    }
    src = out;
  }
  return src;
}

// mesa_hf.onnx.letterbox: -> Float32Array (3, H, W) and the inner (h, w)
function letterbox(rgb, h0, w0, H, W, mean, std) {
  const [h, w] = fitSize(h0, w0, H, W);
  const image = h === h0 && w === w0 ? rgb : resizeBicubicPIL(rgb, h0, w0, h, w);
  const scale = f32(1 / 255);
  const m = mean.map(f32), inv = std.map((s) => f32(1 / f32(s)));
  const pixels = new Float32Array(3 * H * W);
  for (let c = 0; c < 3; c++) for (let y = 0; y < H; y++) {
    const sy = Math.min(y, h - 1);
    for (let x = 0; x < W; x++) {
      const sx = Math.min(x, w - 1);
      const v = image[(sy * w + sx) * 3 + c];
      pixels[(c * H + y) * W + x] = f32(f32(f32(v * scale) - m[c]) * inv[c]);
    }
  }
  return { pixels, inner: [h, w] };
}

// mesa_hf.onnx._linear_weights / resize_bilinear (half-pixel centres, float32 arithmetic)
function linearWeights(source, target) {
  const low = new Int32Array(target), high = new Int32Array(target), weight = new Float32Array(target);
  for (let i = 0; i < target; i++) {
    const p = Math.max((i + 0.5) * (source / target) - 0.5, 0);
    low[i] = Math.min(Math.floor(p), source - 1);
    high[i] = Math.min(low[i] + 1, source - 1);
    weight[i] = p - low[i];
  }
  return { low, high, weight };
}
// depth: Float32Array (h, w) with row stride `stride` -> Float32Array (H, W)
function cropResize(depth, stride, h, w, H, W) {
  const out = new Float32Array(H * W);
  if (h === H && w === W) {
    for (let y = 0; y < H; y++) out.set(depth.subarray(y * stride, y * stride + W), y * W);
    return out;
  }
  const ys = linearWeights(h, H), xs = linearWeights(w, W);
  const rows = new Float32Array(w);
  for (let y = 0; y < H; y++) {
    const a = ys.low[y] * stride, b = ys.high[y] * stride, wy = ys.weight[y], wy1 = f32(1 - wy);
    for (let x = 0; x < w; x++) rows[x] = f32(f32(depth[a + x] * wy1) + f32(depth[b + x] * wy));
    for (let x = 0; x < W; x++) {
      const wx = xs.weight[x];
      out[y * W + x] = f32(f32(rows[xs.low[x]] * f32(1 - wx)) + f32(rows[xs.high[x]] * wx));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------- 16-bit PNG (mm)
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; t[n] = c >>> 0; }
  return t;
})();
function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const out = new Uint8Array(12 + data.length), view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}
async function deflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
// mesa_hf.evaluation.io.save_depth_png16: round(depth / scale) (float32, half to even), 0 for non-positive
async function depthPng16(depth, H, W, scale, texts) {
  const s = f32(scale);
  const raw = new Uint8Array(H * (1 + 2 * W));
  for (let y = 0; y < H; y++) {
    const row = y * (1 + 2 * W);
    for (let x = 0; x < W; x++) {
      const d = depth[y * W + x];
      let u = Number.isFinite(d) && d > 0 ? roundHalfEven(f32(d / s)) : 0;
      u = Math.min(65535, Math.max(0, u));
      raw[row + 1 + 2 * x] = u >> 8;
      raw[row + 2 + 2 * x] = u & 255;
    }
  }
  const header = new Uint8Array(13), hv = new DataView(header.buffer);
  hv.setUint32(0, W); hv.setUint32(4, H); header[8] = 16; header[9] = 0;
  const enc = new TextEncoder();
  const parts = [new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", header)];
  for (const [key, value] of Object.entries(texts)) {
    const k = enc.encode(key), v = enc.encode(value), data = new Uint8Array(k.length + 1 + v.length);
    data.set(k); data.set(v, k.length + 1);
    parts.push(chunk("tEXt", data));
  }
  parts.push(chunk("IDAT", await deflate(raw)), chunk("IEND", new Uint8Array(0)));
  return new Blob(parts, { type: "image/png" });
}

// ---------------------------------------------------------------------------------------- colours
function colour(t) {  // a compact "turbo"-like ramp, near = warm
  t = Math.min(1, Math.max(0, t));
  const r = 34.61 + t * (1172.33 + t * (-10793.56 + t * (33300.12 + t * (-38394.49 + t * 14825.05))));
  const g = 23.31 + t * (557.33 + t * (1225.33 + t * (-3574.96 + t * (1073.77 + t * 707.56))));
  const b = 27.2 + t * (3211.1 + t * (-15327.97 + t * (27814 + t * (-22569.18 + t * 6838.66))));
  return [r, g, b].map((v) => Math.min(255, Math.max(0, Math.round(v))));
}

// ---------------------------------------------------------------------------------------- model and backend
async function chooseBackend(config) {
  const wanted = new URLSearchParams(location.search).get("backend");
  if (wanted !== "wasm" && config.precision !== "int8" && navigator.gpu) {
    try {
      const adapter = await navigator.gpu.requestAdapter();
      if (!adapter) return ["wasm", "WebGPU: no adapter; running on WASM (CPU)"];
      const limit = Math.min(adapter.limits.maxStorageBufferBindingSize, adapter.limits.maxBufferSize);
      if (limit < config.largest_tensor_bytes) {
        return ["wasm", `WebGPU's buffer limit (${(limit / 2 ** 20).toFixed(0)} MiB) is below this model's largest tensor (${(config.largest_tensor_bytes / 2 ** 20).toFixed(0)} MiB); running on WASM (CPU)`];
      }
      return ["webgpu", ""];
    } catch (error) {
      return ["wasm", `WebGPU unavailable (${error.message}); running on WASM (CPU)`];
    }
  }
  if (config.precision === "int8") return ["wasm", ""];
  return ["wasm", wanted === "wasm" ? "" : "WebGPU not available in this browser; running on WASM (CPU)"];
}

async function init() {
  const config = await (await fetch("./web_config.json")).json();
  state.config = config;
  ort.env.wasm.wasmPaths = new URL("./ort/", location.href).href;
  const threads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.numThreads = threads;
  const [backend, note] = await chooseBackend(config);
  const t0 = performance.now();
  state.session = await ort.InferenceSession.create(`./${config.model_file}`, {
    executionProviders: backend === "webgpu" ? ["webgpu", "wasm"] : ["wasm"],
    graphOptimizationLevel: "all",
  });
  const mode = backend === "webgpu" ? "WebGPU" :
    threads > 1 ? `WASM, multi-threaded (${threads} threads)` : "WASM, single-threaded" + (self.crossOriginIsolated ? "" : " (no cross-origin isolation: serve with COOP/COEP headers for threads)");
  state.backend = mode;
  state.threads = threads;
  $("runtime").textContent = `backend: ${mode}; model ${config.model_file} (${config.precision}, ${config.height}×${config.width}) loaded in ${((performance.now() - t0) / 1000).toFixed(2)} s`;
  $("runtime").dataset.backend = backend;
  $("runtime").dataset.threads = String(threads);
  if (note) showMessage(note);
  document.body.dataset.ready = "1";
}

async function decode(file) {
  try {
    return await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none", imageOrientation: "from-image" });
  } catch {
    throw new Error(`${file.name || "the file"} is not an image this browser can read`);
  }
}

async function run(file) {
  if (!state.session || state.busy) return;
  state.busy = true;
  document.body.dataset.done = "0";
  showMessage("");
  try {
    const t0 = performance.now();
    const bitmap = await decode(file);
    const w0 = bitmap.width, h0 = bitmap.height;
    const photo = $("photo");
    photo.width = w0; photo.height = h0;
    const context = photo.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    const rgba = context.getImageData(0, 0, w0, h0).data;
    const rgb = new Uint8Array(w0 * h0 * 3);
    for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) { rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2]; }
    const { height: H, width: W, image_mean, image_std } = state.config;
    const { pixels, inner } = letterbox(rgb, h0, w0, H, W, image_mean, image_std);
    const t1 = performance.now();
    const feeds = { [state.config.input_name]: new ort.Tensor("float32", pixels, [1, 3, H, W]) };
    const result = await state.session.run(feeds);
    const t2 = performance.now();
    const output = result[state.config.output_name];
    const raw = output.data instanceof Float32Array ? output.data : Float32Array.from(output.data);
    const depth = cropResize(raw, W, inner[0], inner[1], h0, w0);
    const sorted = Float32Array.from(depth).sort();
    const n = sorted.length;
    const median = n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    const lo = sorted[0], hi = sorted[n - 1];
    // coloured depth
    const view = $("depth");
    view.width = w0; view.height = h0;
    const image = new ImageData(w0, h0);
    for (let i = 0; i < depth.length; i++) {
      const [r, g, b] = colour(1 - (depth[i] - lo) / Math.max(hi - lo, 1e-6));
      image.data.set([r, g, b, 255], 4 * i);
    }
    view.getContext("2d").putImageData(image, 0, 0);
    $("viewer").hidden = false;
    slide();
    const png = await depthPng16(depth, h0, w0, state.config.png_scale_m, state.config.png_text);
    const link = $("download");
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(png);
    link.download = `${(file.name || "photo").replace(/\.[^.]*$/, "")}_depth16.png`;
    link.hidden = false;
    const t3 = performance.now();
    $("stats").textContent = `depth min ${lo.toFixed(2)} m, median ${median.toFixed(2)} m, max ${hi.toFixed(2)} m`;
    $("runtime").textContent = `backend: ${state.backend}; ${w0}×${h0} photo: inference ${(t2 - t1).toFixed(0)} ms, upload to depth ${(t3 - t0).toFixed(0)} ms`;
    Object.assign($("runtime").dataset, { inferenceMs: (t2 - t1).toFixed(1), totalMs: (t3 - t0).toFixed(1) });
  } catch (error) {
    showMessage(error.message);
  } finally {
    state.busy = false;
    document.body.dataset.done = "1";
  }
}

function slide() {
  const percent = $("slider").value;
  $("depth").style.clipPath = `inset(0 0 0 ${percent}%)`;
}

$("slider").addEventListener("input", slide);
$("file").addEventListener("change", (event) => { if (event.target.files[0]) run(event.target.files[0]); event.target.value = ""; });
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => { event.preventDefault(); drop.classList.remove("over"); if (event.dataTransfer.files[0]) run(event.dataTransfer.files[0]); });
window.addEventListener("paste", (event) => { const item = [...event.clipboardData.files][0]; if (item) run(item); });
init().catch((error) => { showMessage(`could not load the model: ${error.message}`); document.body.dataset.ready = "error"; });
