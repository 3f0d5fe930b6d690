#!/usr/bin/env node
// Compare gpt2-rs with llama.cpp on the CPU, in the same session: greedy agreement, first-position
// logits, and decode speed in interleaved rounds (issue #7's conditions: 124M shape, 2 threads,
// 32-token prompt = ids 100..131, 128 new greedy tokens, decode tok/s without the prompt).
//
// llama.cpp comes prebuilt from npm (node-llama-cpp 3.x and its @node-llama-cpp/linux-x64
// binaries, which carry one ggml CPU backend per x86 level and load the best one for the CPU);
// nothing is compiled. It runs in this process through node-llama-cpp's bindings; gpt2-rs runs as
// the release binary (`gpt2 generate ... --stats --format json`), one process per round.
//
// Install (once, outside the repository; node >= 20):
//
//     mkdir -p /work/llamacpp-check && cd /work/llamacpp-check && npm install node-llama-cpp@3.22.1
//
// (npm may warn that the package's postinstall script was not run; it is not needed: the
// prebuilt binaries are in @node-llama-cpp/linux-x64, and `build: "never"` below never compiles.)
//
// F32/F16 GGUF files for llama.cpp (optional; the q8_0 GGUF is `gpt2 convert --dtype q8_0`'s):
// the `make-gguf` command writes them from our Hugging Face safetensors with gguf-py
// (`tools/make_llama_gguf.py`, laid out as llama.cpp's convert_hf_to_gguf.py GPT2 model;
// tokenizer and hyperparameters copied from the q8_0 GGUF):
//
//     node tools/llama_cpp_compare.mjs make-gguf --python /work/pyenv-gguf/bin/python
//
// Run (from the repository root; target/release/gpt2 must exist; prints a Markdown report and
// writes the raw results as JSON with --json FILE):
//
//     node tools/llama_cpp_compare.mjs check                 # greedy agreement + logits, each dtype
//     node tools/llama_cpp_compare.mjs bench --rounds 5      # interleaved decode speed
//     node tools/llama_cpp_compare.mjs all --dtypes q8_0,f16,f32 --json /tmp/r.json
//
// Options: --llama-dir DIR (where node-llama-cpp is installed; default /work/llamacpp-check or
// $LLAMA_CPP_NODE_DIR), --gguf-dir DIR (the F32/F16 GGUFs; default <llama-dir>/models),
// --gpt2 PATH (default target/release/gpt2), --threads N (2), --new N (128), --rounds N (5),
// --dtypes LIST (q8_0,f16,f32: those whose GGUF exists), --flash-attn auto|on|off (auto),
// --verbose (all llama.cpp log lines to stderr).
//
// llama.cpp settings: n_threads = n_threads_batch = --threads (node-llama-cpp's context `threads`
// sets both; maxThreads of the Llama instance too), context 1024 (GPT-2's n_ctx), batch 512,
// one sequence, mmap, greedy sampler (temperature 0), no repeat penalty. Decode tok/s for
// llama.cpp is measured like gpt2-rs's `decode_tok_per_s`: new tokens / wall time from the
// first generated token's sampling (right after the prompt's batch) to the last token, i.e.
// 127 single-token forward passes + 128 samplings, so the per-call JS overhead of
// node-llama-cpp is included; llama.cpp's own `llama_perf_context_print` "eval" rate (forward
// passes only, 127 runs) is reported beside it.
//
// Caveats (found 2026-11-27, see /work/notes/llama_cpp_compare.md):
// - node-llama-cpp attaches no ggml threadpool to its contexts, so ggml-cpu creates a disposable
//   threadpool (new worker threads) for every graph compute, i.e. every decoded token;
//   llama-bench and llama-cli attach a persistent one. Numbers here are llama.cpp as embedded by
//   node-llama-cpp, not llama-bench's.
// - The prebuilt x64 package picks libggml-cpu-sapphirerapids.so on this CPU, which repacks the
//   Q8_0 block matrices into its AMX buffer type. To measure another variant, copy the install
//   (`cp -al node_modules` into a new dir), delete that .so from the copy's
//   @node-llama-cpp/linux-x64/bins/linux-x64/ and pass --llama-dir (it then loads the zen4 one).
// - ggml's spinning barriers make llama.cpp collapse (10x slower) when other processes take a
//   core of this 2-core box; look at the own/others CPU line printed after each table and
//   compare only rounds where "others" is near 0.

import {spawnSync} from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const argv = process.argv.slice(2);
const command = argv[0] && !argv[0].startsWith("--") ? argv.shift() : "all";
const opt = (name, dflt) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : dflt;
};
const flag = (name) => argv.includes(`--${name}`);

const llamaDir = opt("llama-dir", process.env.LLAMA_CPP_NODE_DIR ?? "/work/llamacpp-check");
const ggufDir = opt("gguf-dir", path.join(llamaDir, "models"));
const gpt2 = path.resolve(opt("gpt2", "target/release/gpt2"));
const threads = Number(opt("threads", "2"));
const nNew = Number(opt("new", "128"));
const rounds = Number(opt("rounds", "5"));
const flashAttn = {auto: "auto", on: true, off: false}[opt("flash-attn", "auto")];
const verbose = flag("verbose");
const jsonOut = opt("json", null);
const BENCH = "target/bench-models";
const promptIds = Array.from({length: 32}, (_, i) => 100 + i);

// Each dtype: the llama.cpp GGUF, and the gpt2-rs runs to compare it with ([dir, --dtype]).
const CONFIGS = {
    q8_0: {
        gguf: `${BENCH}/124M-random-q8_0-gguf/model.gguf`,
        ours: [[`${BENCH}/124M-random-q8_0-gguf`, null], [`${BENCH}/124M-random`, "q8_0"]],
    },
    f16: {gguf: path.join(ggufDir, "124M-random-f16.gguf"), ours: [[`${BENCH}/124M-random-f16`, "f16"]]},
    f32: {gguf: path.join(ggufDir, "124M-random-f32.gguf"), ours: [[`${BENCH}/124M-random`, "f32"]]},
};

if (command === "make-gguf") {
    const python = opt("python", "/work/pyenv-gguf/bin/python");
    fs.mkdirSync(ggufDir, {recursive: true});
    const script = path.join(path.dirname(fileURLToPath(import.meta.url)), "make_llama_gguf.py");
    for (const [src, dtype] of [[`${BENCH}/124M-random`, "f32"], [`${BENCH}/124M-random-f16`, "f16"]]) {
        const args = [script, "--model", src, "--metadata-from", CONFIGS.q8_0.gguf,
            "--outtype", dtype, "--out", CONFIGS[dtype].gguf];
        const r = spawnSync(python, args, {stdio: "inherit"});
        if (r.status !== 0) throw new Error(`make-gguf ${dtype} failed`);
    }
    process.exit(0);
}

// ---------------------------------------------------------------------------------------------
// llama.cpp through node-llama-cpp

const {getLlama, LlamaLogLevel} = await import(
    pathToFileURL(path.join(llamaDir, "node_modules/node-llama-cpp/dist/index.js")).href);
const logLines = [];
const llama = await getLlama({
    gpu: false, build: "never", maxThreads: threads, logLevel: LlamaLogLevel.debug,
    logger: (level, message) => {
        logLines.push(message);
        if (verbose) process.stderr.write(`[llama.cpp ${level}] ${message}\n`);
    },
});
const takeLogs = () => logLines.splice(0, logLines.length);

async function llamaOpen(ggufPath) {
    const t0 = performance.now();
    const model = await llama.loadModel({modelPath: ggufPath, gpuLayers: 0, useMmap: true});
    const context = await model.createContext({
        contextSize: 1024, batchSize: 512, sequences: 1, threads: {ideal: threads, min: threads},
        flashAttention: flashAttn, performanceTracking: true,
    });
    return {model, context, loadMs: performance.now() - t0};
}
async function llamaClose({model, context}) {
    await context.dispose();
    await model.dispose();
}

// Greedy generation; times every yielded token.
async function llamaGenerate(h, n) {
    const seq = h.context.getSequence();
    const times = [];
    const ids = [];
    const t0 = performance.now();
    for await (const token of seq.evaluate(promptIds, {temperature: 0})) {
        times.push(performance.now());
        ids.push(token);
        if (ids.length >= n) break;
    }
    const nThreads = h.context._ctx.getThreads();
    takeLogs();
    await h.context.printTimings();
    const perf = takeLogs().join("\n");
    const evalLine = perf.split("\n").find((l) => /\beval time/.test(l) && !/prompt eval/.test(l)) ?? "";
    const m = /eval time =\s*([\d.]+) ms \/\s*(\d+) runs.*?([\d.]+) tokens per second/.exec(evalLine);
    const pm = /prompt eval time =\s*([\d.]+) ms \/\s*(\d+) tokens/.exec(perf);
    seq.dispose();
    return {
        ids, nThreads,
        prefillAndFirstMs: times[0] - t0,
        decodeMs: times[n - 1] - times[0],
        decodeTokPerS: n / ((times[n - 1] - times[0]) / 1e3),
        perfEvalMs: m ? Number(m[1]) : null, perfEvalRuns: m ? Number(m[2]) : null,
        perfEvalTokPerS: m ? Number(m[3]) : null,
        perfPromptMs: pm ? Number(pm[1]) : null,
        perfRaw: perf.trim(),
    };
}

// Raw logits after the whole prompt (the first generated position).
async function llamaLogits(h) {
    const seq = h.context.getSequence();
    const input = promptIds.map((t, i) => i === promptIds.length - 1
        ? [t, {generateNext: {token: true, logits: true, options: {temperature: 0}}}] : t);
    const out = await seq.controlledEvaluate(input);
    seq.dispose();
    const next = out[promptIds.length - 1].next;
    const logits = new Float32Array(50257).fill(NaN);
    for (const [tok, v] of next.logits) logits[tok] = v;
    return {logits, token: next.token};
}

// ---------------------------------------------------------------------------------------------
// gpt2-rs

function oursArgs(dir, dtype) {
    return ["-m", dir, ...(dtype ? ["--dtype", dtype] : []), "--threads", String(threads)];
}
function oursGenerate(dir, dtype, n, stats) {
    const args = ["generate", "--offline", "--greedy", "--ignore-eos", ...(stats ? ["--stats"] : []),
        "--format", "json", ...oursArgs(dir, dtype), "-n", String(n), "--prompt-ids", promptIds.join(",")];
    const r = spawnSync(gpt2, args, {encoding: "utf8", maxBuffer: 1 << 26});
    if (r.status !== 0) throw new Error(`gpt2 ${args.join(" ")}: ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split("\n")[0]);
}
function readSafetensorsF32(file, name) {
    const buf = fs.readFileSync(file);
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
    const [a, b] = header[name].data_offsets;
    const bytes = buf.subarray(8 + n + a, 8 + n + b);
    return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
}
function oursLogits(dir, dtype) {
    const out = path.join(os.tmpdir(), `gpt2_logits_${process.pid}.safetensors`);
    const args = ["logits", "--offline", ...oursArgs(dir, dtype), "--ids", promptIds.join(","), "--out", out];
    const r = spawnSync(gpt2, args, {encoding: "utf8"});
    if (r.status !== 0) throw new Error(`gpt2 ${args.join(" ")}: ${r.stderr}`);
    const logits = readSafetensorsF32(out, "logits");
    fs.unlinkSync(out);
    return logits;
}

// ---------------------------------------------------------------------------------------------

// CPU accounting around each timed run: system-wide busy cores (/proc/stat) and this process's
// own (llama.cpp) or its waited-for children's (gpt2-rs) CPU time (/proc/self/stat), so that a
// round disturbed by other work on the box can be recognised (others = busy - own).
function cpuSnap() {
    const stat = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = stat[3] + stat[4];
    const total = stat.reduce((a, b) => a + b, 0);
    const self = fs.readFileSync("/proc/self/stat", "utf8").split(") ")[1].split(" ").map(Number);
    // fields after "(comm) ": index 11 utime, 12 stime, 13 cutime, 14 cstime (clock ticks)
    return {t: performance.now(), busy: total - idle, own: self[11] + self[12], children: self[13] + self[14]};
}
function cpuDelta(a, b, who) {
    const secs = (b.t - a.t) / 1e3;
    const hz = 100; // USER_HZ
    const busy = (b.busy - a.busy) / hz / secs;
    const own = (who === "llama" ? b.own - a.own : b.children - a.children) / hz / secs;
    return {wallS: secs, busyCores: busy, ownCores: own, otherCores: Math.max(0, busy - own)};
}

const argmax = (a) => a.reduce((best, v, i) => (v > a[best] ? i : best), 0);
const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const leadingEqual = (a, b) => {
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    return i;
};
const label = ([dir, dtype]) => `gpt2-rs ${path.basename(dir)}${dtype ? ` --dtype ${dtype}` : ""}`;
const f = (x, d = 1) => (x == null ? "–" : x.toFixed(d));

const dtypes = opt("dtypes", "q8_0,f16,f32").split(",").filter((d) => {
    if (!CONFIGS[d]) throw new Error(`unknown dtype ${d}`);
    if (!fs.existsSync(CONFIGS[d].gguf)) {
        console.log(`(skipping ${d}: ${CONFIGS[d].gguf} not found; see make-gguf)`);
        return false;
    }
    return true;
});

const results = {
    date: new Date().toISOString(), host: os.hostname(), cpus: os.cpus().length, loadavg: os.loadavg(),
    cpuModel: os.cpus()[0]?.model, threads, nNew, promptIds, flashAttn,
    nodeLlamaCpp: JSON.parse(fs.readFileSync(path.join(llamaDir, "node_modules/node-llama-cpp/package.json"))).version,
    llamaCppRelease: llama.llamaCppRelease, gpt2, check: {}, bench: {},
};

// Log what llama.cpp loaded: the CPU backend variant, its features, the context settings.
{
    const h = await llamaOpen(CONFIGS[dtypes[0]].gguf);
    const lines = takeLogs();
    const pick = (re) => lines.filter((l) => re.test(l)).map((l) => l.trim());
    results.llamaCppBackend = pick(/load_backend|system_info|CPU : /);
    results.llamaCppContext = pick(/llama_context: +(n_ctx|n_batch|n_ubatch|causal_attn|flash_attn|n_seq_max|kv_unified)|n_threads|graph_reuse|AMX|repack|extra_buf/)
        .filter((l) => !/amx repack tensor/.test(l)).slice(0, 30);
    results.llamaCppAmxRepacked = lines.filter((l) => /amx repack tensor/.test(l)).length;
    results.llamaCppThreads = h.context._ctx.getThreads();
    results.llamaCppSystemInfo = llama.systemInfo;
    await llamaClose(h);
    console.log(`# llama.cpp vs gpt2-rs, ${results.date}\n`);
    console.log(`node-llama-cpp ${results.nodeLlamaCpp}, llama.cpp release ${JSON.stringify(results.llamaCppRelease)}, ` +
        `threads ${results.llamaCppThreads} (n_threads = n_threads_batch), flash attention ${flashAttn}`);
    console.log(`    system_info: ${results.llamaCppSystemInfo}`);
    for (const l of [...results.llamaCppBackend, ...results.llamaCppContext]) console.log(`    ${l}`);
    console.log(`    (${results.llamaCppAmxRepacked} tensors repacked for the AMX buffer type)`);
    console.log(`load average at start: ${results.loadavg.map((x) => x.toFixed(2)).join(" ")}\n`);
}

if (command === "check" || command === "all") {
    console.log(`## Check: greedy continuation (32 tokens) and first-position logits\n`);
    console.log(`| llama.cpp GGUF | gpt2-rs run | identical leading tokens / 32 | llama.cpp argmax | ours argmax | ours top-1 margin | max abs logit diff | mean abs diff | logit std (ours) | top-10 overlap |`);
    console.log(`|---|---|---|---|---|---|---|---|---|---|`);
    const idLines = [];
    for (const d of dtypes) {
        const cfg = CONFIGS[d];
        const h = await llamaOpen(cfg.gguf);
        const gen = await llamaGenerate(h, 32);
        const lg = await llamaLogits(h);
        await llamaClose(h);
        takeLogs();
        results.check[d] = {llamaIds: gen.ids, llamaArgmax: argmax(lg.logits), llamaToken: lg.token, ours: []};
        for (const run of cfg.ours) {
            const ours = oursGenerate(run[0], run[1], 32, false);
            const ol = oursLogits(run[0], run[1]);
            let maxDiff = 0, sum = 0;
            for (let i = 0; i < ol.length; i++) {
                const x = Math.abs(ol[i] - lg.logits[i]);
                if (!(x <= maxDiff)) maxDiff = x; // NaN propagates
                sum += x;
            }
            const same = leadingEqual(gen.ids, ours.ids);
            const mean = ol.reduce((a, b) => a + b, 0) / ol.length;
            const std = Math.sqrt(ol.reduce((a, b) => a + (b - mean) ** 2, 0) / ol.length);
            const top = (a, k) => Array.from(a.keys()).sort((x, y) => a[y] - a[x]).slice(0, k);
            const oursTop = top(ol, 10), llamaTop = top(lg.logits, 10);
            const r = {run: label(run), ids: ours.ids, identicalLeading: same, argmax: argmax(ol),
                top1Margin: ol[oursTop[0]] - ol[oursTop[1]], maxAbsDiff: maxDiff, meanAbsDiff: sum / ol.length,
                logitStd: std, oursTop10: oursTop, llamaTop10: llamaTop,
                top10Overlap: oursTop.filter((t) => llamaTop.includes(t)).length};
            results.check[d].ours.push(r);
            console.log(`| ${d} | ${r.run} | ${same} | ${results.check[d].llamaArgmax} | ${r.argmax} | ` +
                `${r.top1Margin.toFixed(3)} | ${r.maxAbsDiff.toExponential(2)} | ${r.meanAbsDiff.toExponential(2)} | ` +
                `${std.toFixed(3)} | ${r.top10Overlap}/10 |`);
        }
        idLines.push(`${d}: llama.cpp ids ${gen.ids.join(",")}`);
        for (const r of results.check[d].ours) idLines.push(`${d}: ${r.run} ids ${r.ids.join(",")}`);
    }
    console.log(`\n${idLines.join("\n")}\n`);
}

if (command === "bench" || command === "all") {
    console.log(`## Decode speed, ${rounds} interleaved rounds (32-token prompt + ${nNew} new tokens, ${threads} threads)\n`);
    for (const d of dtypes) {
        const cfg = CONFIGS[d];
        const rows = {llama: [], ours: cfg.ours.map(() => [])};
        for (let r = 0; r < rounds; r++) {
            // Alternate who goes first, so that neither always follows the other.
            const order = r % 2 === 0 ? ["llama", "ours"] : ["ours", "llama"];
            for (const who of order) {
                if (who === "llama") {
                    const h = await llamaOpen(cfg.gguf);
                    const c0 = cpuSnap();
                    const g = await llamaGenerate(h, nNew);
                    const cpu = cpuDelta(c0, cpuSnap(), "llama");
                    await llamaClose(h);
                    takeLogs();
                    rows.llama.push({decodeTokPerS: g.decodeTokPerS, perfEvalTokPerS: g.perfEvalTokPerS,
                        perfEvalRuns: g.perfEvalRuns, prefillAndFirstMs: g.prefillAndFirstMs,
                        perfPromptMs: g.perfPromptMs, loadMs: h.loadMs, threads: g.nThreads,
                        loadavg1: os.loadavg()[0], cpu});
                } else {
                    cfg.ours.forEach((run, i) => {
                        const c0 = cpuSnap();
                        const j = oursGenerate(run[0], run[1], nNew, true);
                        const cpu = cpuDelta(c0, cpuSnap(), "ours");
                        rows.ours[i].push({...j.stats, loadavg1: os.loadavg()[0], cpu});
                    });
                }
            }
        }
        results.bench[d] = {llama: rows.llama, ours: cfg.ours.map((run, i) => ({run: label(run), rounds: rows.ours[i]}))};
        console.log(`### ${d}\n`);
        console.log(`| run | median decode tok/s | per round | median prefill (32 tok) ms | median load ms |`);
        console.log(`|---|---|---|---|---|`);
        const L = rows.llama;
        console.log(`| llama.cpp (wall, like decode_tok_per_s) | **${f(median(L.map((x) => x.decodeTokPerS)))}** | ` +
            `${L.map((x) => f(x.decodeTokPerS)).join(", ")} | ${f(median(L.map((x) => x.perfPromptMs)))} | ${f(median(L.map((x) => x.loadMs)), 0)} |`);
        console.log(`| llama.cpp (llama_perf eval, ${L[0].perfEvalRuns} runs) | ${f(median(L.map((x) => x.perfEvalTokPerS)))} | ` +
            `${L.map((x) => f(x.perfEvalTokPerS)).join(", ")} | | |`);
        cfg.ours.forEach((run, i) => {
            const O = rows.ours[i];
            console.log(`| ${label(run)} | **${f(median(O.map((x) => x.decode_tok_per_s)))}** | ` +
                `${O.map((x) => f(x.decode_tok_per_s)).join(", ")} | ${f(median(O.map((x) => x.prefill_ms)))} | ${f(median(O.map((x) => x.load_ms)), 0)} |`);
        });
        console.log(`\n(llama.cpp threads per round: ${L.map((x) => x.threads).join(", ")}; ` +
            `1-min load average per round: ${L.map((x) => x.loadavg1.toFixed(2)).join(", ")})`);
        const cpuStr = (x) => `${x.cpu.ownCores.toFixed(2)}/${x.cpu.otherCores.toFixed(2)}`;
        console.log(`(CPU cores used during each run, own/others (others = other processes on the box; ` +
            `whole process incl. load for gpt2-rs, generation only for llama.cpp): llama.cpp ${L.map(cpuStr).join(", ")}; ` +
            cfg.ours.map((run, i) => `${label(run)} ${rows.ours[i].map(cpuStr).join(", ")}`).join("; ") + `)\n`);
    }
}

if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(results, null, 1));
await llama.dispose();
