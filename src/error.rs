//! The error a command returns, and the exit code it maps to: 1 for
//! problems the user can fix (manifest, build failures, Docker not
//! reachable), 2 for unexpected failures. clap exits 2 on usage errors.

use miette::Diagnostic;

/// A failed command.
#[derive(Debug)]
pub struct Error {
    report: miette::Report,
    code: u8,
}

impl Error {
    /// A problem the user can act on (exit 1).
    pub fn user(d: impl Diagnostic + Send + Sync + 'static) -> Self {
        Error {
            report: miette::Report::new(d),
            code: 1,
        }
    }

    /// A plain message the user can act on (exit 1).
    pub fn msg(message: impl Into<String>, help: impl Into<String>) -> Self {
        Error {
            report: miette::miette!(help = help.into(), "{}", message.into()),
            code: 1,
        }
    }

    /// Something that should not happen (exit 2).
    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        Error {
            report: miette::miette!("{context}: {e}"),
            code: 2,
        }
    }

    /// Ctrl-C (exit 130, as shells report SIGINT).
    pub fn interrupted() -> Self {
        Error {
            report: miette::miette!("interrupted"),
            code: 130,
        }
    }

    /// A container that `nixpack run` ran exited with `code`: nixpack exits
    /// with the same code (1 when it does not fit an exit status).
    pub fn exit_code_of(reference: &str, code: i64) -> Self {
        Error {
            report: miette::miette!("`{reference}` exited with code {code}"),
            code: u8::try_from(code).ok().filter(|c| *c != 0).unwrap_or(1),
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        self.code
    }

    /// The report to print.
    pub fn report(&self) -> &miette::Report {
        &self.report
    }
}

impl From<crate::manifest::ManifestError> for Error {
    fn from(e: crate::manifest::ManifestError) -> Self {
        Error::user(e)
    }
}

impl From<crate::render::RenderError> for Error {
    fn from(e: crate::render::RenderError) -> Self {
        Error::user(e)
    }
}
