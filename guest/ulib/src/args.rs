//! The program's arguments as the kernel passed them: NUL-separated, the
//! program path first.

/// The argument vector; cheap to copy.
#[derive(Clone, Copy)]
pub struct Args {
    raw: &'static [u8],
}

impl Args {
    /// Wraps the argument block the kernel handed to `_start`.
    pub const fn from_raw(raw: &'static [u8]) -> Args {
        Args { raw }
    }

    /// All arguments, the program path first. Non-UTF-8 ones read as "?".
    pub fn iter(&self) -> ArgsIter {
        ArgsIter { rest: self.raw }
    }

    /// Argument `i` (0 = program path).
    pub fn get(&self, i: usize) -> Option<&'static str> {
        self.iter().nth(i)
    }

    /// Number of arguments, the program path included.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none (not even the program path).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The program's base name ("/bin/shell" -> "shell").
    pub fn program(&self) -> &'static str {
        let path = self.get(0).unwrap_or("?");
        path.rsplit('/').next().unwrap_or(path)
    }
}

/// Iterator over [`Args`], from [`Args::iter`].
pub struct ArgsIter {
    rest: &'static [u8],
}

impl Iterator for ArgsIter {
    type Item = &'static str;

    fn next(&mut self) -> Option<&'static str> {
        // A trailing NUL does not start another (empty) argument.
        if self.rest.is_empty() {
            return None;
        }
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.rest.len());
        let arg = &self.rest[..end];
        self.rest = self.rest.get(end + 1..).unwrap_or(&[]);
        Some(core::str::from_utf8(arg).unwrap_or("?"))
    }
}
