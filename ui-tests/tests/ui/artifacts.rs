//! Finds the libraries the cases compile against: the ones cargo already built for this test,
//! in the workspace's own target directory. Nothing is built a second time.
//!
//! The test binary lives in `target/<profile>/deps/`, next to every library of the build. That
//! folder can hold several builds of one crate (another checkout's, or one resolved with other
//! features by `cargo test -p`), so the libraries are not picked by name. The fixture library
//! (`durable_jobs_ui_tests`) is the newest build in the folder: the build cargo just checked
//! or made for this run, from the current sources. rustc itself then says which build of each
//! dependency that library was compiled against: linking a one-line program against it with
//! `--print link-args` (and a linker that does nothing) lists their exact files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The crate the fixtures are in.
const FIXTURES: &str = "durable_jobs_ui_tests";

/// The crates a case may name, besides the fixtures: the fixture library's dependencies.
const DEPENDENCIES: [&str; 4] = ["durable_jobs", "serde", "thiserror", "tokio"];

/// How to compile a case against the workspace's build.
pub(crate) struct Artifacts {
    /// The rustc that built the libraries.
    pub(crate) rustc: PathBuf,
    /// `target/<profile>/deps`.
    pub(crate) deps: PathBuf,
    /// `--extern name=path` for every crate a case may name.
    pub(crate) externs: Vec<(String, PathBuf)>,
}

/// Why the libraries could not be found.
#[derive(Debug)]
pub(crate) struct Missing(String);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Artifacts {
    /// The libraries next to the running test binary. `scratch` holds the probe's files.
    pub(crate) fn find(scratch: &Path) -> Result<Artifacts, Missing> {
        let exe = std::env::current_exe().map_err(|e| Missing(format!("current_exe: {e}")))?;
        let deps = exe
            .parent()
            .ok_or_else(|| Missing(format!("{} has no parent folder", exe.display())))?
            .to_path_buf();
        let rustc = rustc();
        let fixtures = newest_build(&deps, FIXTURES)?;
        let linked = linked_libraries(&rustc, &deps, &fixtures, scratch)?;
        let mut externs = vec![(FIXTURES.to_owned(), fixtures)];
        for name in DEPENDENCIES {
            let path = linked
                .iter()
                .find(|p| build_of(p, name))
                .ok_or_else(|| {
                    Missing(format!(
                        "{FIXTURES} is not linked against `{name}`; the cases need it as a dependency of the fixture library"
                    ))
                })?;
            externs.push((name.to_owned(), path.clone()));
        }
        Ok(Artifacts {
            rustc,
            deps,
            externs,
        })
    }
}

/// The rustc next to the cargo running this test, so both come from one toolchain.
fn rustc() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .and_then(|cargo| {
            let rustc = cargo.with_file_name(format!("rustc{}", std::env::consts::EXE_SUFFIX));
            rustc.is_file().then_some(rustc)
        })
        .unwrap_or_else(|| PathBuf::from("rustc"))
}

/// Whether `path` is `lib<name>-<hash>.rlib`.
fn build_of(path: &Path, name: &str) -> bool {
    let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
        return false;
    };
    file.strip_prefix("lib")
        .and_then(|f| f.strip_prefix(name))
        .and_then(|f| f.strip_prefix('-'))
        .and_then(|f| f.strip_suffix(".rlib"))
        .is_some_and(|hash| !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The most recently written `lib<name>-<hash>.rlib` in `deps`.
fn newest_build(deps: &Path, name: &str) -> Result<PathBuf, Missing> {
    let entries = std::fs::read_dir(deps)
        .map_err(|e| Missing(format!("cannot read {}: {e}", deps.display())))?;
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in entries.flatten() {
        let path = entry.path();
        if !build_of(&path, name) {
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
            newest = Some((modified, path));
        }
    }
    newest.map(|(_, p)| p).ok_or_else(|| {
        Missing(format!(
            "no build of {name} in {}; run this test through `cargo test`",
            deps.display()
        ))
    })
}

/// The Rust libraries rustc links into a program that uses `fixtures`.
fn linked_libraries(
    rustc: &Path,
    deps: &Path,
    fixtures: &Path,
    scratch: &Path,
) -> Result<Vec<PathBuf>, Missing> {
    // A folder of this process's own: test runners may start several copies of this test.
    let dir = scratch.join(format!("probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Missing(format!("cannot create {}: {e}", dir.display())))?;
    let probe = dir.join("probe.rs");
    std::fs::write(
        &probe,
        format!("extern crate {FIXTURES};\nfn main() {{}}\n"),
    )
    .map_err(|e| Missing(format!("cannot write {}: {e}", probe.display())))?;
    let output = Command::new(rustc)
        .arg("--edition=2021")
        .arg("--crate-type=bin")
        .arg("--crate-name=ui_probe")
        .arg(&probe)
        .arg("--extern")
        .arg(format!("{FIXTURES}={}", fixtures.display()))
        .arg("-L")
        .arg(format!("dependency={}", deps.display()))
        .arg("--print=link-args")
        // Nothing is linked: only the command line is wanted.
        .arg("-Clinker=true")
        .arg("-o")
        .arg(dir.join("probe"))
        .output()
        .map_err(|e| Missing(format!("cannot run {}: {e}", rustc.display())))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !output.status.success() {
        return Err(Missing(format!(
            "rustc could not load {}:\n{}",
            fixtures.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(stdout
        .split('"')
        .filter(|arg| arg.ends_with(".rlib"))
        .map(PathBuf::from)
        .collect())
}
