//! Helpers shared by the test suites (tests are not examples: they may share
//! code). Each suite includes this with `#[path = "../support/mod.rs"] mod support;`.
#![allow(dead_code)] // each suite uses the helpers it needs

pub mod child;
pub mod proc;
