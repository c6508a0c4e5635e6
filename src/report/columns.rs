//! Text tables for people: each column as wide as its widest cell, two spaces apart.

/// Rows as aligned lines: the first `right_aligned` columns (numbers) aligned right,
/// the others left, trailing blanks trimmed.
pub fn align<const N: usize>(rows: &[[String; N]], right_aligned: usize) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(
                |(i, (cell, width))| {
                    if i < right_aligned { format!("{cell:>width$}") } else { format!("{cell:<width$}") }
                },
            )
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A cell for a value that may be unknown.
pub fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".into())
}
