//! Compile-error snapshots: every program in `ui/fail/` must fail to compile with exactly the
//! errors in the `.stderr` next to it, every program in `ui/pass/` must compile without a
//! warning and run. Every snapshot also meets the standards in `standards.rs` (one error per
//! mistake, no internals), which blessing does not override.
//!
//! Each case is one rustc run against the libraries cargo already built for this test (see
//! `ui/artifacts.rs`), so the suite costs a few seconds, not a second build of every
//! dependency. It prints a line per case as it goes.
//!
//! ```sh
//! cargo test -p durable-jobs-ui-tests --test ui                     # check every case
//! cargo test -p durable-jobs-ui-tests --test ui -- wrong-kind       # only cases whose name contains this
//! BLESS=1 cargo test -p durable-jobs-ui-tests --test ui             # rewrite the .stderr files
//! ```

mod artifacts;
mod normalize;
mod standards;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use artifacts::Artifacts;

/// The longest a pass case may run.
const RUN_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Must fail to compile with its snapshot.
    Fail,
    /// Must compile cleanly and run successfully.
    Pass,
}

struct Case {
    expect: Expect,
    /// The source, relative to the workspace root.
    path: String,
    /// `fail/wrong-kind-task`, for progress lines and filters.
    name: String,
}

/// What checking one case found.
enum Outcome {
    Ok,
    Blessed,
    Failed(String),
}

struct Suite {
    workspace: PathBuf,
    artifacts: Artifacts,
    scratch: PathBuf,
    bless: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bless = args.iter().any(|a| a == "--bless")
        || std::env::var_os("BLESS").is_some_and(|v| !v.is_empty() && v != "0");
    let (filters, skips) = selection(&args);

    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("ui-tests sits in the workspace")
        .to_path_buf();
    let mut cases = collect(&manifest_dir, &workspace);
    cases.retain(|c| {
        (filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str())))
            && !skips.iter().any(|s| c.name.contains(s.as_str()))
    });
    // As libtest answers, for test runners that list and run tests one by one: no case is
    // ignored.
    if args.iter().any(|a| a == "--ignored") {
        cases.clear();
    }

    if args.iter().any(|a| a == "--list") {
        for case in &cases {
            println!("{}: test", case.name);
        }
        return ExitCode::SUCCESS;
    }
    if cases.is_empty() {
        println!("ui: no case matches the filter");
        return ExitCode::SUCCESS;
    }

    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-tests");
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        eprintln!("ui: cannot create {}: {e}", scratch.display());
        return ExitCode::FAILURE;
    }
    let artifacts = match Artifacts::find(&scratch) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ui: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(cases.len());
    println!(
        "ui: compiling {} cases against the libraries in {}, {workers} at a time",
        cases.len(),
        artifacts.deps.display()
    );
    let suite = Suite {
        workspace,
        artifacts,
        scratch,
        bless,
    };

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let blessed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let begun = Instant::now();
                let outcome = suite.check(case);
                let took = begun.elapsed().as_secs_f32();
                let verdict = match &outcome {
                    Outcome::Ok => "ok",
                    Outcome::Blessed => "blessed",
                    Outcome::Failed(_) => "FAILED",
                };
                println!(
                    "ui: [{:>2}/{}] {:<48} {verdict} ({took:.1}s)",
                    i + 1,
                    cases.len(),
                    case.name
                );
                let _ = std::io::stdout().flush();
                match outcome {
                    Outcome::Ok => {}
                    Outcome::Blessed => {
                        blessed.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Failed(why) => failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((case.name.clone(), why)),
                }
            });
        }
    });

    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    for (name, why) in &failures {
        println!("\n---- {name} ----\n{why}");
    }
    let fail_cases = cases.iter().filter(|c| c.expect == Expect::Fail).count();
    println!(
        "\nui: {} compile-fail and {} pass cases in {:.1}s: {} failed{}",
        fail_cases,
        cases.len() - fail_cases,
        started.elapsed().as_secs_f32(),
        failures.len(),
        match blessed.load(Ordering::Relaxed) {
            0 => String::new(),
            n => format!(", {n} snapshots rewritten; review the diff"),
        }
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        if !suite.bless {
            println!("ui: `BLESS=1 cargo test -p durable-jobs-ui-tests --test ui` rewrites the snapshots");
        }
        ExitCode::FAILURE
    }
}

/// The filters and `--skip` patterns among the arguments, read as libtest reads them: cargo
/// forwards the same arguments to every test binary, and test runners pass libtest's options.
fn selection(args: &[String]) -> (Vec<String>, Vec<String>) {
    const WITH_VALUE: [&str; 6] = [
        "--format",
        "--test-threads",
        "--color",
        "--logfile",
        "--shuffle-seed",
        "-Z",
    ];
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--skip" {
            skips.extend(args.next().cloned());
        } else if WITH_VALUE.contains(&arg.as_str()) {
            let _ = args.next();
        } else if !arg.starts_with('-') {
            filters.push(arg.clone());
        }
    }
    (filters, skips)
}

/// Every `ui/fail/*.rs` and `ui/pass/*.rs`, sorted by name.
fn collect(manifest_dir: &Path, workspace: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    for (folder, expect) in [("fail", Expect::Fail), ("pass", Expect::Pass)] {
        let dir = manifest_dir.join("ui").join(folder);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.sort();
        for file in files {
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let relative = file.strip_prefix(workspace).unwrap_or(&file);
            cases.push(Case {
                expect,
                path: relative.to_string_lossy().into_owned(),
                name: format!("{folder}/{stem}"),
            });
        }
    }
    cases
}

impl Suite {
    fn check(&self, case: &Case) -> Outcome {
        // Per process as well as per case: two runs of the suite may share `target/`.
        let out_dir = self.scratch.join(format!(
            "{}-{}",
            case.name.replace('/', "-"),
            std::process::id()
        ));
        if let Err(e) = std::fs::create_dir_all(&out_dir) {
            return Outcome::Failed(format!("cannot create {}: {e}", out_dir.display()));
        }
        let outcome = self.compile(case, &out_dir);
        let _ = std::fs::remove_dir_all(&out_dir);
        outcome
    }

    fn compile(&self, case: &Case, out_dir: &Path) -> Outcome {
        let binary = out_dir.join("case");
        let mut rustc = Command::new(&self.artifacts.rustc);
        rustc
            .current_dir(&self.workspace)
            .arg("--edition=2021")
            .arg("--crate-type=bin")
            .arg(format!(
                "--crate-name={}",
                case.name.replace(['/', '-'], "_")
            ))
            .arg(&case.path)
            .arg("-L")
            .arg(format!("dependency={}", self.artifacts.deps.display()))
            .arg("--color=never")
            .arg("--diagnostic-width=140")
            // Cases are fragments of programs; an unused item is not a finding.
            .arg("-Adead_code")
            .arg("-o")
            .arg(&binary);
        for (name, path) in &self.artifacts.externs {
            rustc
                .arg("--extern")
                .arg(format!("{name}={}", path.display()));
        }
        if case.expect == Expect::Fail {
            rustc.arg("--emit=metadata");
        }
        let output = match rustc.output() {
            Ok(o) => o,
            Err(e) => return Outcome::Failed(format!("cannot run rustc: {e}")),
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        match case.expect {
            Expect::Pass if !output.status.success() || !stderr.trim().is_empty() => {
                Outcome::Failed(format!("expected to compile without a warning:\n{stderr}"))
            }
            Expect::Pass => run(&binary),
            Expect::Fail if output.status.success() => Outcome::Failed(format!(
                "expected a compile error, but it compiled{}",
                if stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!(":\n{stderr}")
                }
            )),
            Expect::Fail => self.compare(case, &stderr),
        }
    }

    /// Compares the normalized output with the snapshot, or writes it when blessing.
    fn compare(&self, case: &Case, stderr: &str) -> Outcome {
        let actual = normalize::normalize(
            stderr,
            &normalize::Context {
                workspace: &self.workspace,
                case: &case.path,
            },
        );
        let source = std::fs::read_to_string(self.workspace.join(&case.path)).unwrap_or_default();
        if let Err(problems) = standards::check(&source, &actual) {
            return Outcome::Failed(format!(
                "the compiler's output breaks the snapshot standards:\n{problems}\n\n{actual}"
            ));
        }
        let snapshot = self.workspace.join(&case.path).with_extension("stderr");
        let expected = std::fs::read_to_string(&snapshot).ok();
        if expected.as_deref() == Some(actual.as_str()) {
            return Outcome::Ok;
        }
        if self.bless {
            return match std::fs::write(&snapshot, &actual) {
                Ok(()) => Outcome::Blessed,
                Err(e) => Outcome::Failed(format!("cannot write {}: {e}", snapshot.display())),
            };
        }
        match expected {
            None => Outcome::Failed(format!(
                "no snapshot {}; the compiler printed:\n{actual}",
                snapshot.display()
            )),
            Some(expected) => Outcome::Failed(diff(&expected, &actual)),
        }
    }
}

/// Runs a compiled pass case.
fn run(binary: &Path) -> Outcome {
    let mut child = match Command::new(binary)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("cannot run {}: {e}", binary.display())),
    };
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Outcome::Failed(format!("still running after {RUN_LIMIT:?}; killed"));
            }
            Err(e) => return Outcome::Failed(format!("cannot wait for the case: {e}")),
        }
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() => Outcome::Ok,
        Ok(out) => Outcome::Failed(format!(
            "compiled, but the program failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Outcome::Failed(format!("cannot read the case's output: {e}")),
    }
}

/// The snapshot and the new output, line by line, marking where they part.
fn diff(expected: &str, actual: &str) -> String {
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.lines().collect();
    let first = expected
        .iter()
        .zip(&actual)
        .position(|(e, a)| e != a)
        .unwrap_or(expected.len().min(actual.len()));
    let mut out = format!(
        "the output differs from the snapshot from line {}:\n",
        first + 1
    );
    out.push_str("--- snapshot\n");
    for line in &expected[first..] {
        out.push_str(&format!("- {line}\n"));
    }
    out.push_str("+++ compiler\n");
    for line in &actual[first..] {
        out.push_str(&format!("+ {line}\n"));
    }
    out
}
