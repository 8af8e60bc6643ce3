//! Part II: failing on purpose and the one-process suite.

use crate::outputs::Output;

pub const OUTPUTS: &[Output] = &[];
