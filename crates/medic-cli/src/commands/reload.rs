//! `medicctl reload`: the coordinator re-reads its config file, all or
//! nothing.

use medic_proto::pb::v1 as pb;

use super::Ctx;
use crate::cli::ReloadArgs;
use crate::error::Error;
use crate::format::{self, Table};
use crate::json;

pub(super) async fn reload(ctx: &mut Ctx<'_>, a: ReloadArgs) -> Result<(), Error> {
    let req = pb::ReloadConfigRequest { reason: a.reason };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.reload_config(r).await })
        .await?;
    if ctx.is_json() {
        ctx.json(&json::Reload {
            applied: r.applied,
            errors: r.errors.iter().map(json::ConfigError::from).collect(),
        })?;
    } else if r.applied {
        writeln!(ctx.out, "reloaded: the new configuration is in force")?;
    } else {
        error_table(&r.errors).write(ctx.out)?;
    }
    if r.applied {
        return Ok(());
    }
    Err(Error::Failed(format!(
        "the coordinator rejected the new configuration ({} error{}); the old one keeps running",
        r.errors.len(),
        format::plural(r.errors.len())
    )))
}

/// Config errors, one row each; `(file)` for the file as a whole.
fn error_table(errors: &[pb::ConfigError]) -> Table {
    let mut t = Table::new(&["KEY", "ERROR"]);
    for e in errors {
        t.row(vec![
            if e.key.is_empty() {
                "(file)".to_owned()
            } else {
                e.key.clone()
            },
            e.message.clone(),
        ]);
    }
    t
}
