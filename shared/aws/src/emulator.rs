//! Python tools from PyPI that tests, benchmarks and `aos dev --backend aws
//! --emulator` run, each installed once into a virtualenv this code owns (concurrent
//! installers take turns through a lock directory). No Docker.
//!
//! - [`Moto`]: moto server, the AWS emulator, on a free loopback port. The server is a
//!   child process that exits when its stdin closes, so it dies with the process that
//!   started it, however that process ends.
//! - [`ensure_sam_cli`]: aws-sam-cli, which brings `sam`, `cfn-lint` and AWS's Lambda
//!   Runtime Interface Emulator ([`lambda_rie`]), which runs a function's `bootstrap`
//!   behind the Lambda invoke API.

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

/// Why a tool could not be installed or started.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot install {what} into {venv}: {detail}")]
    Install {
        what: String,
        venv: String,
        detail: String,
    },
    #[error("cannot start moto server: {0}")]
    Start(String),
    #[error("{0}")]
    Missing(String),
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
        let python = ensure_installed(venv, &MOTO)?.join("python");
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

/// A package a virtualenv is made for.
#[derive(Debug)]
struct Package {
    /// The marker file is `.aos-{name}-{version}`.
    name: &'static str,
    version: &'static str,
    /// What pip installs, at `version`.
    pip_name: &'static str,
    /// What it is, for the one line printed while installing.
    about: &'static str,
}

impl Package {
    fn requirement(&self) -> String {
        format!("{}=={}", self.pip_name, self.version)
    }
}

const MOTO: Package = Package {
    name: "moto",
    version: MOTO_VERSION,
    pip_name: "moto[server]",
    about: "the AWS emulator",
};

/// The aws-sam-cli release the tests run (it brings cfn-lint and the Lambda RIE).
pub const SAM_VERSION: &str = "1.170.0";

const SAM: Package = Package {
    name: "sam",
    version: SAM_VERSION,
    pip_name: "aws-sam-cli",
    about: "sam, cfn-lint and the Lambda Runtime Interface Emulator",
};

/// The schemathesis release the API's property-based test runs (`tests/schemathesis.rs`).
pub const SCHEMATHESIS_VERSION: &str = "4.32.5";

const SCHEMATHESIS: Package = Package {
    name: "schemathesis",
    version: SCHEMATHESIS_VERSION,
    pip_name: "schemathesis",
    about: "the OpenAPI test generator the API is checked with",
};

/// Installs schemathesis into `venv` if needed; returns the virtualenv's `bin/`, which
/// holds `schemathesis`.
pub fn ensure_schemathesis(venv: &Path) -> Result<PathBuf, EmulatorError> {
    ensure_installed(venv, &SCHEMATHESIS)
}

/// The workspace's `target/` (or `CARGO_TARGET_DIR`) when built from source.
fn target_dir() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.is_dir().then_some(target)
}

/// `AOS_MOTO_VENV`, or `target/moto-venv` of this workspace when built from source,
/// or `.aos/moto-venv`.
pub fn default_venv() -> PathBuf {
    if let Some(dir) = std::env::var_os("AOS_MOTO_VENV") {
        return PathBuf::from(dir);
    }
    match target_dir() {
        Some(t) => t.join("moto-venv"),
        None => PathBuf::from(".aos/moto-venv"),
    }
}

/// `AOS_SAM_VENV`, or `target/sam-venv` of this workspace when built from source, or
/// `.aos/sam-venv`.
pub fn default_sam_venv() -> PathBuf {
    if let Some(dir) = std::env::var_os("AOS_SAM_VENV") {
        return PathBuf::from(dir);
    }
    match target_dir() {
        Some(t) => t.join("sam-venv"),
        None => PathBuf::from(".aos/sam-venv"),
    }
}

/// Installs aws-sam-cli into `venv` if needed; returns the virtualenv's `bin/`, which
/// holds `sam` and `cfn-lint`.
pub fn ensure_sam_cli(venv: &Path) -> Result<PathBuf, EmulatorError> {
    ensure_installed(venv, &SAM)
}

/// AWS's Lambda Runtime Interface Emulator for this machine's architecture, from the
/// aws-sam-cli in `venv` (installed if needed). It runs a `bootstrap` without Docker:
/// `aws-lambda-rie --runtime-interface-emulator-address 127.0.0.1:P1
/// --runtime-api-address 127.0.0.1:P2 <bootstrap>`, invoked with
/// `POST http://127.0.0.1:P1/2015-03-31/functions/function/invocations`.
pub fn lambda_rie(venv: &Path) -> Result<PathBuf, EmulatorError> {
    ensure_sam_cli(venv)?;
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    };
    let file = format!("aws-lambda-rie-{arch}");
    let lib = venv.join("lib");
    let found = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| {
            python
                .path()
                .join("site-packages/samcli/local/rapid")
                .join(&file)
        })
        .find(|p| p.is_file());
    found.ok_or_else(|| {
        EmulatorError::Missing(format!(
            "no {file} under {}/python*/site-packages/samcli/local/rapid: aws-sam-cli \
             {SAM_VERSION} ships the Lambda RIE for x86_64 and arm64 only",
            lib.display()
        ))
    })
}

/// Creates the virtualenv and installs `package` once; later calls only check the
/// marker. Returns the virtualenv's `bin/`. Concurrent callers (test binaries) take
/// turns through a lock directory.
fn ensure_installed(venv: &Path, package: &Package) -> Result<PathBuf, EmulatorError> {
    let marker = venv.join(format!(".aos-{}-{}", package.name, package.version));
    let bin = venv.join("bin");
    if marker.exists() {
        return Ok(bin);
    }
    let fail = |detail: String| EmulatorError::Install {
        what: package.requirement(),
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
            Err(_) if marker.exists() => return Ok(bin),
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
    let result = install(venv, &bin.join("python"), &marker, package);
    let _ = std::fs::remove_dir(&lock);
    result.map_err(fail)?;
    Ok(bin)
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

fn install(venv: &Path, python: &Path, marker: &Path, package: &Package) -> Result<(), String> {
    if marker.exists() {
        return Ok(());
    }
    // Straight to the terminal: test harnesses capture `eprintln!`, and a person
    // waiting on a minute of pip should know why.
    let started = Instant::now();
    let _ = writeln!(
        std::io::stderr(),
        "aos: installing {} ({}) into {} — once, about a minute",
        package.requirement(),
        package.about,
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
        &package.requirement(),
    ]))?;
    std::fs::write(marker, package.version).map_err(|e| e.to_string())?;
    let _ = writeln!(
        std::io::stderr(),
        "aos: {} installed in {:.0} s",
        package.requirement(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
