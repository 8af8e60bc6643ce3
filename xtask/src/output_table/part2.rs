//! Part II: dynamic memory testing.

use crate::outputs::Output;

pub const OUTPUTS: &[Output] = &[];
