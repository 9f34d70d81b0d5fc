//! The coordinator endpoints a client may talk to: `http://` or `https://`
//! URLs, validated when the list is built, in the order they are tried.

use crate::error::ConfigError;

/// A validated, non-empty list of coordinator URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints(Vec<String>);

impl Endpoints {
    /// Validates `urls`: at least one, each an `http://` or `https://` URL.
    /// The first bad one is named in the error.
    pub fn new<I, S>(urls: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        if urls.is_empty() {
            return Err(ConfigError::NoEndpoints);
        }
        for url in &urls {
            check(url)?;
        }
        Ok(Self(urls))
    }

    /// The URLs, in order.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// How many there are (at least one).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a list is never empty. (For clippy's `len` rule.)
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The index of `url` in the list, ignoring a trailing `/` on either.
    pub fn position(&self, url: &str) -> Option<usize> {
        let url = url.trim_end_matches('/');
        self.0.iter().position(|e| e.trim_end_matches('/') == url)
    }
}

/// Checks one URL: it parses, and its scheme is `http://` or `https://`.
pub fn check(url: &str) -> Result<(), ConfigError> {
    tonic::transport::Endpoint::from_shared(url.to_owned()).map_err(|e| ConfigError::NotAUrl {
        url: url.to_owned(),
        detail: crate::error::chain(&e),
    })?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::Scheme {
            url: url.to_owned(),
        });
    }
    Ok(())
}

/// Whether `url` is `https://`.
pub fn is_tls(url: &str) -> bool {
    url.starts_with("https://")
}

/// Whether `url` names a loopback address (`localhost`, `127.0.0.0/8`,
/// `::1`), where plaintext never leaves the machine.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_endpoint_is_named_in_the_error() {
        let e = Endpoints::new(["http://a:1", "ftp://b:2"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"ftp://b:2\": the scheme must be http:// or https://"
        );
        let e = Endpoints::new(["http://a:1", "http://bad host:2"]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("\"http://bad host:2\": not a URL"),
            "{e}"
        );
        assert!(matches!(
            Endpoints::new(Vec::<String>::new()),
            Err(ConfigError::NoEndpoints)
        ));
    }

    #[test]
    fn positions_ignore_a_trailing_slash() {
        let e = Endpoints::new(["http://a:1/", "https://b:2"]).unwrap();
        assert_eq!(e.position("http://a:1"), Some(0));
        assert_eq!(e.position("https://b:2/"), Some(1));
        assert_eq!(e.position("https://c:3"), None);
    }

    #[test]
    fn loopback_urls_are_recognised() {
        for url in [
            "http://localhost:7470",
            "http://127.0.0.1:7470",
            "http://127.3.2.1",
            "http://[::1]:7470",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.1:7470",
            "http://coord.example:7470",
            "http://[::2]:7470",
            "http://localhost.example:7470",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }
}
