//! Part II: testing in a real guest.

use crate::outputs::Output;

pub const OUTPUTS: &[Output] = &[];
