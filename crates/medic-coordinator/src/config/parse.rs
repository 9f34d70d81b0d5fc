//! Helpers the sections share: collected errors as a list, addresses, URLs
//! and directories.

use std::net::SocketAddr;
use std::path::Path;

use medic_policy::config::Errors;

pub(super) fn errs_into_vec(errs: Errors) -> Vec<medic_policy::ConfigError> {
    match errs.finish(()) {
        Ok(()) => Vec::new(),
        Err(e) => e.0,
    }
}

pub(super) fn addr(errs: &mut Errors, path: &str, raw: Option<&str>, default: &str) -> SocketAddr {
    let text = raw.unwrap_or(default);
    match text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(e) => {
            errs.push(
                path,
                format!("invalid address {text:?} ({e}); use IP:PORT, for example 127.0.0.1:7470"),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    }
}

/// Records an error at `key` when `dir` exists and is not a directory
/// (`/dev/null`, a regular file): the state directory is created when
/// missing, but never in place of something else.
pub(super) fn not_a_file(errs: &mut Errors, key: &str, dir: &Path) {
    if dir.as_os_str().is_empty() {
        return;
    }
    if let Ok(meta) = std::fs::metadata(dir)
        && !meta.is_dir()
    {
        errs.push(
            key,
            format!(
                "{} exists and is not a directory; name a directory (it is created when missing)",
                dir.display()
            ),
        );
    }
}

/// An `http://HOST:PORT` URL (or `https://` when `https` is allowed).
pub(super) fn url_error(u: &str, https: bool) -> Option<String> {
    match u.parse::<hyper::Uri>() {
        Ok(uri)
            if (uri.scheme_str() == Some("http")
                || (https && uri.scheme_str() == Some("https")))
                && uri.host().is_some_and(|h| !h.is_empty())
                && uri.path() == "/"
                && !u.ends_with('/') =>
        {
            None
        }
        _ => Some(format!(
            "{u:?} is not {} URL with a host and no path (for example http://10.0.0.1:2379)",
            if https {
                "an http:// or https://"
            } else {
                "an http://"
            }
        )),
    }
}
