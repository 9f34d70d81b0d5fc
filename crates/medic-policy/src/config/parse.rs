//! Reading TOML: every unknown key and the first type error, each with its
//! key path, recorded into [`Errors`].

use serde::Deserialize;

use super::Errors;

/// Reads TOML into `T`. Every unknown key is recorded in `errs` with its full
/// path (and reading goes on, so validation can report its own errors too);
/// a syntax or type error is recorded with its key path and line, and stops
/// reading (`None`).
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, errs: &mut Errors) -> Option<T> {
    let de = match toml::Deserializer::parse(text) {
        Ok(de) => de,
        Err(e) => {
            errs.push("", toml_message(&e));
            return None;
        }
    };
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let result = serde_ignored::deserialize(
        serde_path_to_error::Deserializer::new(de, &mut track),
        |path| unknown.push(ignored_key_path(&path)),
    );
    for path in unknown {
        errs.push(path, "unknown key");
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(error_key_path(&track.path()), toml_message(&e));
            None
        }
    }
}

/// An unknown key's path as the docs write it (`jobs[0].restart.colour`,
/// `limits.restart_job.rate.extra`): serde_ignored's own text marks every
/// optional value on the way with `?` and writes indices as keys.
fn ignored_key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_key_path(parent)),
        Path::Map { parent, key } => {
            let parent = ignored_key_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_key_path(parent),
    }
}

/// The path of a value of the wrong type, in the same form, leaving out
/// the segments serde cannot name.
fn error_key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

fn toml_message(e: &toml::de::Error) -> String {
    // toml's message already says where (line, column) and what was expected.
    e.to_string().trim_end().to_owned()
}

/// A number that TOML may write as an integer or a float (`10` or `2.5`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Number {
    /// Written as an integer.
    Int(i64),
    /// Written as a float.
    Float(f64),
}

impl Number {
    pub(super) fn as_f64(self) -> f64 {
        match self {
            // Percentages and small counts: the conversion is exact.
            #[allow(clippy::cast_precision_loss)]
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}
