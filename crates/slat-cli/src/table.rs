//! Plain-text tables for the terminal: columns padded to their widest cell, text left-aligned,
//! numbers right-aligned, a rule under the header.

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Flush left (names, descriptions).
    Left,
    /// Flush right (numbers).
    Right,
}

/// One row of a [`TextTable`].
#[derive(Debug, Clone)]
enum Row {
    Cells(Vec<String>),
    Rule,
}

/// A table rendered as aligned text lines.
#[derive(Debug, Clone)]
pub struct TextTable {
    headers: Vec<String>,
    aligns: Vec<Align>,
    rows: Vec<Row>,
}

/// Display width of a cell: one column per `char` (the summary uses no wide characters).
fn width(s: &str) -> usize {
    s.chars().count()
}

impl TextTable {
    /// A table with these column headers and alignments.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        TextTable {
            headers: columns.iter().map(|(h, _)| h.to_string()).collect(),
            aligns: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    /// Append a row; missing cells are blank, extra cells are dropped.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(Row::Cells(cells));
    }

    /// Append a horizontal rule.
    pub fn rule(&mut self) {
        self.rows.push(Row::Rule);
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.iter().filter(|r| matches!(r, Row::Cells(_))).count()
    }

    /// Whether the table has no data rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rendered lines: the header, a rule, then the rows; columns two spaces apart, no
    /// trailing spaces.
    pub fn lines(&self) -> Vec<String> {
        self.lines_within(usize::MAX)
    }

    /// [`lines`](Self::lines) at most `max` columns wide where possible: left-aligned text
    /// columns after the first are cut with `…`, the last first, to no less than 12 columns.
    pub fn lines_within(&self, max: usize) -> Vec<String> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            if let Row::Cells(cells) = row {
                for (w, c) in widths.iter_mut().zip(cells) {
                    *w = (*w).max(width(c));
                }
            }
        }
        let mut total: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
        // Too wide: cut left-aligned text columns, the last first, to no less than 12 columns.
        for i in (0..widths.len()).rev() {
            if total <= max {
                break;
            }
            if self.aligns[i] == Align::Left && widths[i] > 12 && i > 0 {
                let cut = (total - max).min(widths[i] - 12);
                widths[i] -= cut;
                total -= cut;
            }
        }
        let fmt_row = |cells: &[String]| {
            let mut line = String::new();
            for (i, ((c, w), a)) in cells.iter().zip(&widths).zip(&self.aligns).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let cut;
                let c = if width(c) > *w {
                    cut = c.chars().take(w.saturating_sub(1)).chain(std::iter::once('…')).collect::<String>();
                    &cut
                } else {
                    c
                };
                let pad = w - width(c);
                match a {
                    Align::Left => {
                        line.push_str(c);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(c);
                    }
                }
            }
            line.trim_end().to_string()
        };
        let mut out = vec![fmt_row(&self.headers), "─".repeat(total)];
        for row in &self.rows {
            match row {
                Row::Cells(cells) => out.push(fmt_row(cells)),
                Row::Rule => out.push("─".repeat(total)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut t = TextTable::new(&[("name", Align::Left), ("n", Align::Right)]);
        t.row(["a", "1"]);
        t.row(["long name", "1,000"]);
        let lines = t.lines();
        assert_eq!(lines[0], "name           n");
        assert_eq!(lines[1].chars().count(), 16);
        assert_eq!(lines[2], "a              1");
        assert_eq!(lines[3], "long name  1,000");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn short_rows_are_padded() {
        let mut t = TextTable::new(&[("a", Align::Left), ("b", Align::Left)]);
        t.row(["x"]);
        assert_eq!(t.lines()[2], "x");
    }
}
