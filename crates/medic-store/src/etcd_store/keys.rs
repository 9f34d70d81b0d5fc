//! The key layout under a deployment's prefix (see the module
//! documentation of [`super`]).

#[derive(Clone, Debug)]
pub(super) struct Keys {
    pub(super) prefix: String,
}

impl Keys {
    pub(super) fn schema(&self) -> String {
        format!("{}/meta/schema_version", self.prefix)
    }
    pub(super) fn last_id(&self) -> String {
        format!("{}/meta/last_id", self.prefix)
    }
    pub(super) fn snapshot(&self) -> String {
        format!("{}/meta/snapshot", self.prefix)
    }
    pub(super) fn meta(&self) -> String {
        format!("{}/meta/", self.prefix)
    }
    pub(super) fn log(&self, id: u64) -> String {
        format!("{}/log/{id:020}", self.prefix)
    }
    pub(super) fn log_dir(&self) -> String {
        format!("{}/log/", self.prefix)
    }
    pub(super) fn snap_dir(&self) -> String {
        format!("{}/snap/", self.prefix)
    }
    pub(super) fn snap_generation(&self, generation: u64) -> String {
        format!("{}/snap/{generation:020}/", self.prefix)
    }
    pub(super) fn snap_chunk(&self, generation: u64, n: usize) -> String {
        format!("{}/snap/{generation:020}/{n:06}", self.prefix)
    }
    pub(super) fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }
    pub(super) fn fleet_config(&self) -> String {
        format!("{}/config/fleet", self.prefix)
    }
}

/// The end of a prefix range: the prefix with its last byte incremented.
pub(super) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    // Every prefix here ends in `/`, whose successor is `0`.
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

pub(super) fn pad(id: u64) -> String {
    format!("{id:020}")
}
