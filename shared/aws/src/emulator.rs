//! Starts moto server (the AWS emulator from PyPI) for tests, benchmarks and
//! `aos dev --backend aws --emulator`: installs `moto[server]` into a virtualenv this
//! code owns on first use, then runs it on a free loopback port. No Docker.
//!
//! The server is a child process that exits when its stdin closes, so it dies with the
//! process that started it, however that process ends.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The moto release the tests are pinned to.
pub const MOTO_VERSION: &str = "5.2.5";

/// Starts moto in-process on port 0 (the OS picks a free port), prints the port,
/// and exits when stdin reaches end of file.
const SERVER_PY: &str = r#"
import os, sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
_, port = server.get_host_and_port()
sys.stdout.write(f"{port}\n")
sys.stdout.flush()
try:
    while sys.stdin.buffer.read(65536):
        pass
finally:
    os._exit(0)
"#;

/// Why the emulator could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot install moto[server] into {venv}: {detail}")]
    Install { venv: String, detail: String },
    #[error("cannot start moto server: {0}")]
    Start(String),
}

/// A running moto server; dropping it stops the server.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    stdin: Option<ChildStdin>,
    endpoint: String,
}

impl Moto {
    /// The endpoint URL (`http://127.0.0.1:PORT`) to give the SDK.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Installs moto into `venv` if needed and starts a server.
    pub fn start(venv: &Path) -> Result<Moto, EmulatorError> {
        let python = ensure_installed(venv)?;
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(SERVER_PY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| EmulatorError::Start(format!("{}: {e}", python.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| EmulatorError::Start("no stdout".into()))?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| EmulatorError::Start(e.to_string()))?;
        let port: u16 = line.trim().parse().map_err(|_| {
            EmulatorError::Start(format!("moto printed {line:?} instead of its port"))
        })?;
        Ok(Moto {
            stdin: child.stdin.take(),
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Starts moto in the default virtualenv (see [`default_venv`]).
    pub fn start_default() -> Result<Moto, EmulatorError> {
        Self::start(&default_venv())
    }

    /// The endpoint of one server per process, started on first use: tests share it
    /// and keep apart by resource names.
    pub fn shared_endpoint() -> Result<&'static str, String> {
        static SHARED: OnceLock<Result<Moto, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Moto::start_default().map_err(|e| e.to_string()))
            .as_ref()
            .map(|m| m.endpoint())
            .map_err(Clone::clone)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `AOS_MOTO_VENV`, or `target/moto-venv` of this workspace when built from source,
/// or `.aos/moto-venv`.
pub fn default_venv() -> PathBuf {
    if let Some(dir) = std::env::var_os("AOS_MOTO_VENV") {
        return PathBuf::from(dir);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    if target.is_dir() {
        target.join("moto-venv")
    } else {
        PathBuf::from(".aos/moto-venv")
    }
}

fn python_of(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// Creates the virtualenv and installs moto once; later calls only check the marker.
/// Concurrent callers (test binaries) take turns through a lock directory.
fn ensure_installed(venv: &Path) -> Result<PathBuf, EmulatorError> {
    let marker = venv.join(format!(".aos-moto-{MOTO_VERSION}"));
    let python = python_of(venv);
    if marker.exists() {
        return Ok(python);
    }
    let fail = |detail: String| EmulatorError::Install {
        venv: venv.display().to_string(),
        detail,
    };
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
    }
    let lock = venv.with_extension("lock");
    let started = Instant::now();
    loop {
        match std::fs::create_dir(&lock) {
            Ok(()) => break,
            Err(_) if marker.exists() => return Ok(python),
            Err(_) => {
                // Another process is installing; a lock older than 15 minutes is
                // left over from a killed run.
                let stale = std::fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(900));
                if stale || started.elapsed() > Duration::from_secs(900) {
                    let _ = std::fs::remove_dir(&lock);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    let result = install(venv, &python, &marker);
    let _ = std::fs::remove_dir(&lock);
    result.map_err(fail)?;
    Ok(python)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn install(venv: &Path, python: &Path, marker: &Path) -> Result<(), String> {
    if marker.exists() {
        return Ok(());
    }
    // Straight to the terminal: test harnesses capture `eprintln!`, and a person
    // waiting on a minute of pip should know why.
    let started = Instant::now();
    let _ = writeln!(
        std::io::stderr(),
        "aos: installing moto[server]=={MOTO_VERSION} (the AWS emulator) into {} — once, about a minute",
        venv.display()
    );
    if !python.exists() {
        let system = std::env::var("AOS_PYTHON").unwrap_or_else(|_| "python3".into());
        run(Command::new(&system).args(["-m", "venv"]).arg(venv))?;
    }
    run(Command::new(python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("moto[server]=={MOTO_VERSION}"),
    ]))?;
    std::fs::write(marker, MOTO_VERSION).map_err(|e| e.to_string())?;
    let _ = writeln!(
        std::io::stderr(),
        "aos: moto installed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
