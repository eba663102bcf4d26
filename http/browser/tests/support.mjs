// What both browser tests need: the example service as a child process, the React page built
// with esbuild, and Debian's Chromium driven by playwright-core.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "../../..");

/** Where screenshots go: SCREENSHOT_DIR, or target/browser-screenshots. */
export const screenshots = resolve(repo, process.env.SCREENSHOT_DIR || "target/browser-screenshots");
mkdirSync(screenshots, { recursive: true });

/** Builds page/ into a temporary folder and returns it. */
export async function buildPage() {
  const out = mkdtempSync(join(tmpdir(), "durably-page-"));
  await build({
    entryPoints: [join(here, "../page/app.jsx")],
    bundle: true,
    outfile: join(out, "app.js"),
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"production"' },
    logLevel: "warning",
  });
  copyFileSync(join(here, "../page/index.html"), join(out, "index.html"));
  return out;
}

/** Starts the example service with `args`; resolves once it listens. */
export function startService(args) {
  const bin = process.env.DURABLE_JOBS_SERVICE || join(repo, "target/debug/examples/service");
  const child = spawn(bin, ["--addr", "127.0.0.1:0", ...args], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error("the service did not start within 30 s")); }, 30_000);
    let out = "";
    child.on("error", (e) => { clearTimeout(timer); reject(e); });
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`the service exited with ${code}: ${out}`)); });
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        resolvePromise({
          url: m[1],
          stop: () => new Promise((done) => {
            if (child.exitCode !== null || child.signalCode !== null) return done();
            child.once("exit", done);
            child.kill("SIGTERM");
            setTimeout(() => child.kill("SIGKILL"), 10_000).unref();
          }),
          kill: (signal) => child.kill(signal),
        });
      }
    });
  });
}

/** Debian's Chromium, headless, with its connections to the outside turned off. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}
