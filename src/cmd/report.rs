//! `phasebox report FILE`: the records of a --report file as a table.

use std::path::Path;

use anyhow::Result;

pub fn print(path: &Path) -> Result<()> {
    crate::output!("{}", crate::report::table::read(path)?);
    Ok(())
}
