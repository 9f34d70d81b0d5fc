//! Files the config targets can name: a real CA, server, agent and operator
//! certificates with their keys, token files, an empty and a garbage file,
//! a directory, and paths that do not exist. Made once per process, in a
//! directory of its own under the base given to [`init`] (the system's
//! temporary directory otherwise); directories left by processes that are
//! gone are removed.
//!
//! Nothing here names a device or a FIFO: a config parser reading one would
//! block, and that is not a bug of the parser.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use medic_coordinator::devcerts::{Ca, Leaf};

static PATHS: OnceLock<Vec<String>> = OnceLock::new();
static BASE: OnceLock<PathBuf> = OnceLock::new();

/// Puts the fixtures under `base` (call before the first [`paths`]).
pub fn init(base: &Path) {
    let _ = BASE.set(base.to_path_buf());
}

/// Every path the config targets choose from.
pub fn paths() -> &'static [String] {
    PATHS.get_or_init(|| {
        let base = BASE
            .get()
            .cloned()
            .unwrap_or_else(std::env::temp_dir)
            .join("medic-fuzz-fixtures");
        let dir = base.join(std::process::id().to_string());
        remove_stale(&base);
        let mut out: Vec<String> = [
            "",
            "relative/file.pem",
            "/nonexistent/medic/file",
            "/dev/null",
            "/",
            "/run/ingest/heartbeat",
            "/var/lib/medic",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        match write(&dir) {
            Ok(files) => out.extend(files),
            Err(e) => eprintln!("medic-fuzz: fixtures in {} not written: {e}", dir.display()),
        }
        out
    })
}

/// The fixture file called `name` (`server.pem`), or `name` itself when
/// there is none.
pub fn file(name: &str) -> String {
    let suffix = format!("/{name}");
    paths()
        .iter()
        .find(|p| p.ends_with(&suffix))
        .cloned()
        .unwrap_or_else(|| name.to_owned())
}

fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let alive = name
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn write(dir: &Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    let mut put = |name: &str, contents: &[u8], mode: u32| -> std::io::Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, contents)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        files.push(p.display().to_string());
        Ok(())
    };
    let year = Duration::from_secs(365 * 86400);
    let ca = Ca::generate("medic-fuzz CA", year)?;
    put("ca.pem", ca.cert_pem().as_bytes(), 0o644)?;
    let mut server = Leaf::new("localhost", true, year);
    server.dns.push("localhost".to_owned());
    let server = ca.issue(&server)?;
    put("server.pem", server.cert_pem.as_bytes(), 0o644)?;
    put("server.key", server.key_pem.as_bytes(), 0o600)?;
    put("server-open.key", server.key_pem.as_bytes(), 0o644)?;
    let agent = ca.issue(&Leaf::agent("web-1", year))?;
    put("agent.pem", agent.cert_pem.as_bytes(), 0o644)?;
    put("agent.key", agent.key_pem.as_bytes(), 0o600)?;
    let operator = ca.issue(&Leaf::operator("spiffe://medic.dev/operator/admin", year))?;
    put("operator.pem", operator.cert_pem.as_bytes(), 0o644)?;
    let expired = {
        let mut l = Leaf::agent("web-2", year);
        l.not_after = l.not_before;
        ca.issue(&l)?
    };
    put("expired.pem", expired.cert_pem.as_bytes(), 0o644)?;
    put("expired.key", expired.key_pem.as_bytes(), 0o600)?;
    put("token", b"0123456789abcdef0123456789abcdef\n", 0o600)?;
    put("token-open", b"0123456789abcdef0123456789abcdef\n", 0o644)?;
    put("token-short", b"x", 0o600)?;
    put("empty", b"", 0o600)?;
    put(
        "garbage",
        b"-----BEGIN CERTIFICATE-----\n\x00\xff garbage\n-----END CERTIFICATE-----\n",
        0o600,
    )?;
    let sub = dir.join("dir");
    std::fs::create_dir_all(&sub)?;
    files.push(sub.display().to_string());
    files.push(dir.join("missing.pem").display().to_string());
    Ok(files)
}
