//! Private files (TLS keys, bearer tokens) must be readable by their owner
//! only. The coordinator, the agent and medicctl all refuse a wider one,
//! with a message that says how to fix it, rather than use a secret others
//! may have read.

use std::path::Path;

/// `Ok` if `path` is a regular file with mode 0600 or stricter; else why
/// not, naming the file, its mode and the fix.
pub fn check(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o177 != 0 {
        return Err(format!(
            "{} has mode {mode:04o}, wider than 0600: a private key or secret must be readable \
             by its owner only (chmod 600 {})",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secret_files_wider_than_0600_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key.pem");
        std::fs::write(&f, "x").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o604, false),
            (0o700, false),
            (0o644, false),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = check(&f);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
            if !ok {
                let e = r.unwrap_err();
                assert!(
                    e.contains(&format!("{mode:04o}")) && e.contains("chmod 600"),
                    "{e}"
                );
            }
        }
        assert!(
            check(dir.path())
                .unwrap_err()
                .contains("not a regular file")
        );
        assert!(check(&dir.path().join("missing")).is_err());
    }
}
