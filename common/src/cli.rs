//! What the operator commands (`api keys list`, `worker dlq list`) print:
//! tables whose columns line up whatever the values' lengths, through
//! `tabwriter` (elastic tabstops).

use std::io::Write as _;

/// Ends a binary: a failure is one line on stderr, `error: ` and its chain
/// of causes (`a: b: c`), exit status 1; never a backtrace or a `Debug`
/// dump.
pub fn exit_with(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A table with a header row, printed to stdout once filled.
pub struct Table {
    writer: tabwriter::TabWriter<Vec<u8>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        let mut table = Self {
            writer: tabwriter::TabWriter::new(Vec::new()).padding(2),
        };
        table.row(header);
        table
    }

    /// One row; a tab or line break inside a value would break the columns,
    /// so each becomes a space.
    pub fn row(&mut self, cells: &[&str]) {
        let line: Vec<String> = cells
            .iter()
            .map(|cell| cell.replace(['\t', '\n', '\r'], " "))
            .collect();
        // Writing to a `Vec` cannot fail.
        let _ = writeln!(self.writer, "{}", line.join("\t"));
    }

    /// The table as text, columns aligned.
    pub fn render(self) -> std::io::Result<String> {
        let bytes = self
            .writer
            .into_inner()
            .map_err(|err| std::io::Error::other(err.to_string()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub fn print(self) -> std::io::Result<()> {
        print!("{}", self.render()?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_lengths() {
        let mut table = Table::new(&["id", "scopes", "status"]);
        table.row(&[
            "k1",
            "payments:read,payments:write,webhooks:read,webhooks:write",
            "active",
        ]);
        table.row(&["k2-longer", "a", "revoked\tyesterday"]);
        let text = table.render().expect("render");
        let lines: Vec<&str> = text.lines().collect();
        let column = |line: &str, word: &str| line.find(word).expect(word);
        assert_eq!(column(lines[0], "status"), column(lines[1], "active"));
        assert_eq!(
            column(lines[1], "active"),
            column(lines[2], "revoked yesterday")
        );
        assert_eq!(column(lines[0], "scopes"), column(lines[2], "a"));
    }
}
