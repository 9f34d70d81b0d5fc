//! Private files (TLS keys, bearer tokens) must be readable by their owner
//! only. The coordinator, the agent and medicctl all refuse a wider one,
//! with a message that says how to fix it, rather than use a secret others
//! may have read.
//!
//! One exception, the one PostgreSQL makes for its key: a file owned by
//! root may also be readable by its group (0640 or 0440). That is how a
//! key is shared with exactly one service account on purpose: Debian's
//! `root:medic 0640`, and Kubernetes secret volumes with an `fsGroup`,
//! whose files are root-owned and group-readable.

use std::path::Path;

/// Reads a private file after checking it with [`check`]'s rule. The file is
/// opened once and the mode checked on that open file, so what is read is
/// what was checked (no window to swap the file in between).
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    judge(path, &meta)?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(out)
}

/// `Ok` if `path` is a regular file with mode 0600 or stricter (or, owned
/// by root, 0640 or stricter); else why not, naming the file, its mode and
/// the fix.
pub fn check(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    judge(path, &meta)
}

fn judge(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mode = meta.permissions().mode() & 0o777;
    let private = mode & 0o177 == 0;
    let root_shared_with_group = meta.uid() == 0 && mode & 0o137 == 0;
    if !private && !root_shared_with_group {
        return Err(format!(
            "{} has mode {mode:04o}, wider than 0600: a private key or secret must be readable \
             by its owner only (chmod 600 {}), or be owned by root and readable by one group \
             (chown root:GROUP, chmod 640)",
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
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key.pem");
        std::fs::write(&f, "x").unwrap();
        // Group-readable passes only for a root-owned file.
        let root = std::fs::metadata(&f).unwrap().uid() == 0;
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, root),
            (0o440, root),
            (0o660, false),
            (0o604, false),
            (0o700, false),
            (0o644, false),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = check(&f);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
            assert_eq!(read(&f).is_ok(), ok, "read, mode {mode:o}");
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
