//! The API against its own OpenAPI document, by schemathesis (from PyPI, installed
//! once into `target/tmp/schemathesis-venv`): `aos dev` on a fresh store with a
//! known signing secret, an admin token, and schemathesis's generated requests for
//! every operation (examples, boundary and negative cases, random data, and stateful
//! sequences along the links it infers). The run must find no 5xx, no response that
//! its operation does not document (status, content type, schema).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_entrypoints::http::auth::{Claims, mint, now_secs};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const SECRET: &str = "schemathesis-test-secret";

/// `aos dev`, stopped when dropped.
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_response() {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
    let bin = aos_aws::emulator::ensure_schemathesis(&venv).expect("schemathesis installs");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aos"))
        .args([
            "dev",
            "--addr",
            "127.0.0.1:0",
            "--offline",
            "--jwt-secret",
            SECRET,
        ])
        .arg("--db")
        .arg(dir.path().join("aos.db"))
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("AOS_MODEL")
        .env_remove("AOS_DEFAULT_MODEL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let _dev = Dev(child);
    let first = lines.next().unwrap().unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    let token = mint(
        SECRET.as_bytes(),
        &Claims {
            sub: "schemathesis".into(),
            tenant: "default".into(),
            scope: "read write admin".into(),
            exp: now_secs() + 3600,
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
        },
    );

    let started = Instant::now();
    let out = Command::new(bin.join("schemathesis"))
        .arg("run")
        .arg(format!("{base}/v1/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            "--max-examples",
            "20",
            // One worker: with several threads, CPython 3.11's `ast.parse` (which
            // hypothesis calls to describe its filters) can fail with "AST constructor
            // recursion depth mismatch", an error of the tool, not of the API.
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--wait-for-schema",
            "30",
        ])
        // Its example database and reports go to the scratch directory.
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout
        .lines()
        .rfind(|l| l.contains(" in ") && l.starts_with('='))
        .unwrap_or("(no summary line)");
    let cases = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Test cases:"))
        .nth(1)
        .unwrap_or("")
        .trim();
    eprintln!(
        "schemathesis: {cases}; {} ({:.1} s with start-up)",
        summary.trim_matches(|c| c == '=' || c == ' '),
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "schemathesis found problems (exit {:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    // Every operation but the one that served the document (schemathesis leaves out
    // the schema's own URL).
    let operations = aos_entrypoints::http::routes::routes().len() - 1;
    assert!(
        stdout.contains(&format!("Selected: {operations}/{operations}"))
            && stdout.contains(&format!("Tested: {operations}")),
        "it tested all {operations} operations:\n{stdout}"
    );
}
