//! Text tables for people: each column as wide as its widest cell, two spaces apart.

/// Rows as aligned lines: the first `right_aligned` columns (numbers) aligned right,
/// the others left, trailing blanks trimmed. Cells come from files and units that
/// others may have named: control characters are shown escaped, never sent to the
/// terminal.
pub fn align<const N: usize>(rows: &[[String; N]], right_aligned: usize) -> String {
    let rows: Vec<[String; N]> = rows.iter().map(|row| row.clone().map(|cell| printable(&cell))).collect();
    let mut widths = [0usize; N];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
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

/// Text with its control characters (escape sequences, newlines, tabs) written as
/// `\xNN` or `\u{NNNN}`.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            c if c.is_control() && (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("a\x1b[2Jb\tc\u{9b}d"), "a\\x1b[2Jb\\x09c\\u{009b}d");
        let table = align(&[["x\ny".to_string(), "é".to_string()]], 0);
        assert_eq!(table, "x\\x0ay  é\n");
    }
}
