//! What the root package's tests share.

use std::path::Path;
use std::process::Command;

/// The `aos` binary as a person runs it in `home` on a store of their own: the offline
/// model, no provider key or model choice from the environment, no `AOS_DB`, and no
/// `aos login` or API URL of the developer's (`XDG_CONFIG_HOME` is `home`), so the
/// commands work on the store in `home`.
pub fn aos_local(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aos"));
    cmd.current_dir(home)
        .env("AOS_OFFLINE", "true")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("AOS_MODEL")
        .env_remove("AOS_DEFAULT_MODEL")
        .env_remove("AOS_DB")
        .env("XDG_CONFIG_HOME", home)
        .env_remove("AOS_API_URL");
    cmd
}
