//! Not the stable API: items that this crate's own tests, benchmarks, fuzz targets and
//! mutant clients need, and users should not. They may change or go in any release.

pub use crate::runner::adapter::kill_after;
pub use crate::runner::process::{count_group_members, finish_reaping};
pub use crate::runner::template::shell_quote;
