//! A PostgreSQL server of a test's own, for the tests that stop and restart it: made with
//! `initdb` in a temporary folder, on a free port, with trust authentication, and stopped and
//! deleted when dropped. Run as the `postgres` user when the tests run as root (`initdb`
//! refuses root), as `.ci/postgres` does.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A throwaway PostgreSQL server.
pub struct ThrowawayServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl ThrowawayServer {
    /// Makes and starts a server.
    ///
    /// # Panics
    ///
    /// When PostgreSQL's programs are not installed or the server does not start.
    pub fn start() -> ThrowawayServer {
        let bin = Self::bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if as_root() {
            run(Command::new("chown").arg("postgres").arg(dir.path()));
        }
        let server = ThrowawayServer { dir, bin, port };
        server.run_as_postgres(
            "initdb",
            &[
                "-D".as_ref(),
                server.data().as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        server.pg_ctl("start");
        server
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Restarts it (a fast shutdown: every connection is closed, open transactions roll back),
    /// returning once it accepts connections again.
    pub fn restart(&self) {
        self.pg_ctl("restart");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run_as_postgres(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data().as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "-o".as_ref(),
                options.as_ref(),
                action.as_ref(),
            ],
        );
    }

    fn run_as_postgres(&self, program: &str, args: &[&std::ffi::OsStr]) {
        run(self.as_postgres(program).args(args));
    }

    /// `program` of the installation, run as the `postgres` user when this process is root.
    fn as_postgres(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// The folder of the newest installed PostgreSQL's programs (Debian keeps them outside
    /// the PATH), or the folder of `initdb` on the PATH.
    fn bin_dir() -> PathBuf {
        let installed = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .max_by_key(|bin| {
                bin.parent()
                    .and_then(Path::file_name)
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<u32>().ok())
            });
        installed.unwrap_or_else(|| {
            let found = Command::new("sh")
                .args(["-c", "command -v initdb"])
                .output()
                .expect("a shell");
            let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
            assert!(!path.is_empty(), "PostgreSQL's initdb is not installed");
            Path::new(&path).parent().unwrap().to_owned()
        })
    }
}

impl Drop for ThrowawayServer {
    fn drop(&mut self) {
        // An immediate stop: the folder is deleted next, and nothing in it is kept.
        let _ = self
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn as_root() -> bool {
    // The effective user id, from the process's own status file.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn run(command: &mut Command) {
    let output = command.output().expect("the program runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
