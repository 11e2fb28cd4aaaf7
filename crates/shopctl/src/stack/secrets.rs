//! The admin token a local stack hands to every service, kept in its data folder.

use std::path::Path;

use anyhow::Context;

use super::StackConfig;

/// The file in a data folder that keeps the local stack's admin token.
pub(super) const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The admin token a local stack keeps in `data_dir`, if it has one.
pub fn read_admin_token(data_dir: &Path) -> Option<String> {
    let token = std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE)).ok()?;
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// The stack's admin token: `ADMIN_TOKEN` when the stack's environment or ours sets it, else
/// the one kept in the data folder, else a new random one kept there (readable by its owner
/// only) so that `shopctl` commands and the next `shopctl up` find it.
pub(super) fn admin_token(config: &StackConfig, data: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let given = config
        .env
        .iter()
        .find(|(k, _)| k == "ADMIN_TOKEN")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("ADMIN_TOKEN").ok())
        .filter(|t| !t.trim().is_empty());
    if let Some(token) = given.or_else(|| read_admin_token(data)) {
        return Ok(token);
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let path = data.join(ADMIN_TOKEN_FILE);
    std::fs::write(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(token)
}
