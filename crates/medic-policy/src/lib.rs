//! medic's decision engine.
//!
//! Pure and synchronous: no I/O and no clock of its own (every call takes
//! `now`). Everything that decides "may host H do action A now?" lives here.
#![forbid(unsafe_code)]

mod error;
mod types;
mod view;

pub use error::{InvalidInput, PolicyError, ScopeSuffix};
pub use types::*;
pub use view::{ActionStatus, Explanation, HostView, Status};
