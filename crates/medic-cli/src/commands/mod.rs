//! One file per subcommand (or per pair where one undoes the other): build
//! the request, call, print. Each command's `-o json` output types are in
//! the file of the same name under `json/`.
//!
//! - [`status`]: `status`, the coordinator at a glance;
//! - [`pause`]: `pause` and `resume`;
//! - [`hosts`]: `hosts`, hosts as the coordinator sees them;
//! - [`permits`]: `permits` and `revoke`;
//! - [`quarantine`]: `quarantine` and `unquarantine`;
//! - [`history`]: `history`, the audit history page after page;
//! - [`watch`]: `watch`, the audit history live;
//! - [`explain`]: `explain`, every rule that would deny;
//! - [`breaker`]: `breaker reset`;
//! - [`reload`]: `reload`, the config file read again;
//!
//! and what several of them share:
//!
//! - [`page`]: paging through a listing's `next_page_token`;
//! - [`show`]: the tables and phrases several commands print;
//! - [`summary`]: one line saying what an audit event records.

mod approvals;
mod breaker;
mod explain;
mod history;
mod hosts;
mod overrides;
mod page;
mod pause;
mod permits;
mod quarantine;
mod reload;
mod show;
mod status;
mod summary;
mod watch;

use std::collections::BTreeMap;
use std::io::Write;

use medic_proto::pb::v1 as pb;
use serde::Serialize;

use crate::cli::{ActionArg, BreakerCommand, Command, KindArg, OutputFormat};
use crate::client::Connection;
use crate::error::Error;

/// What every command needs: the connection, the output and its format.
pub(crate) struct Ctx<'a> {
    pub(crate) conn: Connection,
    pub(crate) out: &'a mut dyn Write,
    pub(crate) format: OutputFormat,
}

impl Ctx<'_> {
    /// Writes `value` as one pretty-printed JSON document.
    fn json<T: Serialize>(&mut self, value: &T) -> Result<(), Error> {
        serde_json::to_writer_pretty(&mut *self.out, value).map_err(std::io::Error::from)?;
        writeln!(self.out)?;
        Ok(())
    }

    fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// `GetStatus`: for `status`, and for the commands that need the
    /// coordinator's clock or its pauses.
    async fn status_response(&self) -> Result<pb::GetStatusResponse, Error> {
        self.conn
            .unary(pb::GetStatusRequest {}, |mut c, r| async move {
                c.get_status(r).await
            })
            .await
    }
}

/// Runs one command on a connected context. `completions` never gets
/// here: it needs no coordinator.
pub(crate) async fn run(ctx: &mut Ctx<'_>, command: Command) -> Result<(), Error> {
    match command {
        Command::Status => status::status(ctx).await,
        Command::Pause(a) => pause::pause(ctx, a).await,
        Command::Resume(a) => pause::resume(ctx, a).await,
        Command::Override(a) => overrides::run(ctx, a).await,
        Command::Approvals(a) => approvals::list(ctx, a).await,
        Command::Approve(a) => approvals::decide(ctx, a, true).await,
        Command::Reject(a) => approvals::decide(ctx, a, false).await,
        Command::Hosts(a) => hosts::hosts(ctx, a).await,
        Command::Permits(a) => permits::permits(ctx, a).await,
        Command::Revoke(a) => permits::revoke(ctx, a).await,
        Command::Quarantine(a) => quarantine::quarantine(ctx, a).await,
        Command::Unquarantine(a) => quarantine::unquarantine(ctx, a).await,
        Command::History(a) => history::history(ctx, a).await,
        Command::Explain(a) => explain::explain(ctx, a).await,
        Command::Breaker(BreakerCommand::Reset(a)) => breaker::reset(ctx, a).await,
        Command::Reload(a) => reload::reload(ctx, a).await,
        Command::Watch(a) => watch::watch(ctx, a).await,
        Command::Completions(_) | Command::Man(_) => Ok(()),
    }
}

// === What requests share ===

/// A `--selector` as the wire's label map.
fn selector(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

/// An `--action` filter as the wire's `(action, action_name)` pair
/// (unspecified and empty: any action).
fn action_filter(a: Option<ActionArg>) -> (i32, String) {
    a.map_or((0, String::new()), ActionArg::wire)
}

/// A pause's scope: a `--selector` and an `--action`.
fn scope(pairs: &[(String, String)], action: Option<ActionArg>) -> pb::Scope {
    let (action, action_name) = action_filter(action);
    pb::Scope {
        selector: selector(pairs),
        action,
        action_name,
    }
}

/// `--kind` filters as the wire's enum values.
fn kinds(kinds: &[KindArg]) -> Vec<i32> {
    kinds
        .iter()
        .map(|k| i32::from(pb::EventKind::from(*k)))
        .collect()
}
