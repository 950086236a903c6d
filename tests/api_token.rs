//! Local API tokens: `aos dev` prints an admin token at start that the API accepts;
//! `aos token` signs with the same secret, kept beside the store (mode 0600) so
//! tokens survive restarts; the scope and tenant it is asked for are what the API
//! enforces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn token(db: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_aos"))
        .arg("token")
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("AOS_JWT_SECRET")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aos_dev_prints_a_working_admin_token_and_aos_token_mints_scoped_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aos.db");
    // Minted before the server ever ran: the secret is made now and kept.
    let reader = token(&db, &["--tenant", "acme", "--scope", "read", "--sub", "ci"]);
    let secret = dir.path().join("jwt-secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the secret is private");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_aos"))
        .args(["dev", "--addr", "127.0.0.1:0", "--offline"])
        .arg("--db")
        .arg(&db)
        .env_remove("AOS_JWT_SECRET")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("AOS_MODEL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut base = None;
    let mut admin = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if base.is_none() {
            base = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .map(str::to_string);
        }
        if let Some(t) = line.trim().strip_prefix("AOS_TOKEN=") {
            admin = Some(t.to_string());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let (base, admin) = (base.unwrap(), admin.expect("aos dev prints a token"));
    let client = reqwest::Client::new();
    let get = |path: &str, tok: &str| client.get(format!("{base}{path}")).bearer_auth(tok).send();

    let r = get("/v1/agents/primary/dead-letters", &admin)
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the printed token is an admin of default");
    let r = get("/v1/tasks", &reader).await.unwrap();
    assert_eq!(r.status(), 200, "aos token signs with the server's secret");
    let r = client
        .post(format!("{base}/v1/tasks"))
        .bearer_auth(&reader)
        .json(&serde_json::json!({"input": "What is 2 EUR in USD?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a read token cannot submit");
    // A task of default is not acme's.
    let r = client
        .post(format!("{base}/v1/tasks"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"input": "What is 2 EUR in USD?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = get(&format!("/v1/tasks/{id}"), &reader).await.unwrap();
    assert_eq!(r.status(), 404);
    let listed: serde_json::Value = get("/v1/tasks", &reader)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["tasks"], serde_json::json!([]));
    let _ = child.kill();
    let _ = child.wait();

    // Bad requests for a token are refused with a reason.
    let out = Command::new(env!("CARGO_BIN_EXE_aos"))
        .args(["token", "--scope", "root"])
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scope \"root\""));
}
