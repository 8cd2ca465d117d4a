//! Aligned text tables for the terminal: text columns left, numbers right.

/// A table being built.
#[derive(Debug)]
pub struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn numeric(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '+' || c == '-')
        && s.chars().any(|c| c.is_ascii_digit())
        && !s.contains(['T', '='])
}

impl Table {
    /// A table with these column heads.
    pub fn new(head: Vec<String>) -> Table {
        Table {
            head,
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty).
    pub fn row(&mut self, r: Vec<String>) {
        self.rows.push(r);
    }

    /// The table as lines.
    pub fn render(&self) -> String {
        let n = self.head.len();
        let width: Vec<usize> = (0..n)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .chain([&self.head[i]])
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String| {
            let mut parts = Vec::with_capacity(n);
            for (i, w) in width.iter().enumerate() {
                let c = cells.get(i).map_or("", String::as_str);
                let pad = w - c.chars().count();
                if numeric(c) {
                    parts.push(format!("{}{c}", " ".repeat(pad)));
                } else {
                    parts.push(format!("{c}{}", " ".repeat(pad)));
                }
            }
            out.push_str(parts.join("  ").trim_end());
            out.push('\n');
        };
        line(&self.head, &mut out);
        for r in &self.rows {
            line(r, &mut out);
        }
        out
    }

    /// Prints the table.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(vec!["name".into(), "p99".into()]);
        t.row(vec!["orders".into(), "1.2ms".into()]);
        t.row(vec!["a".into(), "38ms".into()]);
        let s = t.render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[1], "orders  1.2ms");
        assert_eq!(lines[2], "a        38ms");
    }
}
