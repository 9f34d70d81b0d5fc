//! The in-process coordinator of `medic_coordinator::testing`.

#![allow(unused_imports, unreachable_pub)]

pub use medic_coordinator::testing::*;
