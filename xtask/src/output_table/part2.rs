//! Part II: measuring memory and creating pressure.

use crate::outputs::Output;

pub const OUTPUTS: &[Output] = &[];
