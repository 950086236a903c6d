//! Which AOS a command talks to: a remote API (URL and bearer token) or the local
//! store. The URL and token come from flags, else the environment (`AOS_API_URL`,
//! `AOS_TOKEN`), else the file `aos login` writes (`$XDG_CONFIG_HOME/aos/config.toml`,
//! else `~/.config/aos/config.toml`, mode 0600). Without a URL the command works on
//! the local store. The rule kept here: a token is only ever sent to the API it was
//! saved for, and never printed.

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a command goes: `--api`, `--token` and `--local`.
#[derive(Debug, Args)]
#[command(next_help_heading = "API")]
pub struct ApiArgs {
    /// The AOS API to talk to, e.g. http://127.0.0.1:8080 (`aos dev`) or your
    /// deployment's URL. Without it, AOS_API_URL or `aos login`, the local store.
    #[arg(long = "api", env = "AOS_API_URL", value_name = "URL")]
    pub api: Option<String>,
    /// The API's bearer token (never printed). Without it, AOS_TOKEN or `aos login`.
    #[arg(long, env = "AOS_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Use the local store even when an API is configured.
    #[arg(long)]
    pub local: bool,
}

/// A remote API and the credentials for it.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The API's base URL, without a trailing `/` or `/v1`.
    pub url: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// What `aos login` saves.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub api: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("api", &self.api)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl ApiArgs {
    /// The API this command talks to, or `None` for the local store.
    pub fn endpoint(&self) -> anyhow::Result<Option<Endpoint>> {
        if self.local {
            return Ok(None);
        }
        // With both given on the command line the saved login is not even read.
        let saved = match config_path() {
            Some(_) if given(&self.api).is_some() && given(&self.token).is_some() => None,
            Some(path) => load(&path)?,
            None => None,
        };
        let url = match (given(&self.api), &saved) {
            (Some(url), _) => normalize_url(&url)?,
            (None, Some(s)) => normalize_url(&s.api)?,
            (None, None) => return Ok(None),
        };
        // The saved token goes only to the API it was saved for.
        let token = given(&self.token).or_else(|| {
            saved
                .filter(|s| normalize_url(&s.api).is_ok_and(|u| u == url))
                .and_then(|s| s.token)
        });
        Ok(Some(Endpoint { url, token }))
    }
}

/// `http(s)://host[:port][/prefix]` without a trailing `/` or `/v1`, or a reason.
pub fn normalize_url(text: &str) -> anyhow::Result<String> {
    let t = text.trim();
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => {}
        _ => bail!(
            "{t:?} is not an API URL; give one like http://127.0.0.1:8080 (what `aos dev` prints) or https://<id>.execute-api.<region>.amazonaws.com"
        ),
    }
    let mut url = t.trim_end_matches('/').to_string();
    if let Some(base) = url.strip_suffix("/v1") {
        url = base.to_string();
    }
    Ok(url)
}

/// `$XDG_CONFIG_HOME/aos/config.toml`, else `$HOME/.config/aos/config.toml`.
pub fn config_path() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    var("XDG_CONFIG_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".config")))
        .map(|d| d.join("aos").join("config.toml"))
}

/// The saved login, if there is one.
pub fn load(path: &Path) -> anyhow::Result<Option<Saved>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let saved: Saved = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid aos login ({}); run `aos login <url>` again or `aos logout`",
            path.display(),
            e.message()
        )
    })?;
    Ok(Some(saved))
}

/// Writes the login readable by its owner only (the directory too), replacing any
/// earlier one in one rename.
pub fn save(path: &Path, saved: &Saved) -> anyhow::Result<()> {
    let dir = path.parent().context("the config path has no directory")?;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let text = format!(
        "# Written by `aos login`; `aos logout` removes it. Keep it private: it holds a token.\n{}",
        toml::to_string(saved).context("writing the login as TOML")?
    );
    let tmp = dir.join(format!(".config.toml.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = (|| {
        use std::io::Write;
        let mut f = options.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_are_normalised_and_bad_ones_refused() {
        assert_eq!(
            normalize_url(" http://127.0.0.1:8080/ ").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_url("https://x.execute-api.eu-west-1.amazonaws.com/v1").unwrap(),
            "https://x.execute-api.eu-west-1.amazonaws.com"
        );
        let e = normalize_url("localhost:8080").unwrap_err().to_string();
        assert!(e.contains("give one like http://127.0.0.1:8080"), "{e}");
        assert!(normalize_url("http://").is_err());
    }

    #[test]
    fn a_saved_login_round_trips_privately_and_never_shows_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aos").join("config.toml");
        assert_eq!(load(&path).unwrap(), None);
        let saved = Saved {
            api: "http://127.0.0.1:8080".into(),
            token: Some("secret-token".into()),
        };
        save(&path, &saved).unwrap();
        assert_eq!(load(&path).unwrap(), Some(saved.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{saved:?}").contains("secret-token"));
        let e = Endpoint {
            url: saved.api,
            token: saved.token,
        };
        assert!(!format!("{e:?}").contains("secret-token"));
        std::fs::write(&path, "api = [").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("aos logout"), "{err}");
    }
}
