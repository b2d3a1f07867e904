//! Errors in a user's definitions: each names the file, the object and the fix.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a project's definitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in, relative to the project root when possible.
    pub file: Option<PathBuf>,
    /// Line and column (1-based) where the parser gave one.
    pub position: Option<(usize, usize)>,
    /// The object, e.g. `feature view step_count_by_source`.
    pub object: String,
    pub message: String,
    /// How to fix it.
    pub fix: Option<String>,
}

impl Diagnostic {
    pub fn new(object: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic { file: None, position: None, object: object.into(), message: message.into(), fix: None }
    }

    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Diagnostic {
        self.file = Some(file.into());
        self
    }

    pub fn at(mut self, line: usize, column: usize) -> Diagnostic {
        self.position = Some((line, column));
        self
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Diagnostic {
        self.fix = Some(fix.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some((line, col)) = self.position {
                write!(f, ":{line}:{col}")?;
            }
            f.write_str(": ")?;
        }
        write!(f, "{}: {}", self.object, self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

/// All the problems found in one pass; reported together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
    /// `Ok(())` when nothing was found.
    pub fn into_result(self) -> Result<(), Diagnostics> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} error{} in the project definitions:", if n == 1 { "" } else { "s" })?;
        for d in &self.0 {
            writeln!(f, "- {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
