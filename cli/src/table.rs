//! Plain-text tables for people: columns padded to their widest cell, long cells cut.

/// The widest a cell is shown.
const MAX_CELL: usize = 60;

fn cut(s: &str) -> String {
    let s = s.replace(['\n', '\t'], " ");
    if s.chars().count() <= MAX_CELL {
        s
    } else {
        let mut out: String = s.chars().take(MAX_CELL - 1).collect();
        out.push('…');
        out
    }
}

/// Renders `rows` under `headers`, one line each.
pub(crate) fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cut(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

/// A JSON value as a cell: strings bare, null as `-`, the rest as JSON.
pub(crate) fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_long_cells_are_cut() {
        let t = render(
            &["id", "status"],
            &[
                vec!["a".into(), "completed".into()],
                vec!["bbbb".into(), "x".repeat(80)],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "ID    STATUS");
        assert_eq!(lines[1], "a     completed");
        assert!(lines[2].starts_with("bbbb  xxx") && lines[2].ends_with('…'));
        assert_eq!(cell(&serde_json::Value::Null), "-");
    }
}
