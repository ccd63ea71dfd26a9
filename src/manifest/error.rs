//! Manifest diagnostics: every error about the contents of `nixpack.toml`
//! carries the file's text and the byte span of the key or value at fault,
//! so miette prints the exact line with a caret under it.

use std::path::PathBuf;
use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};
use thiserror::Error;

/// Why a manifest could not be found, read or accepted.
#[derive(Debug, Error, Diagnostic)]
#[non_exhaustive]
pub enum ManifestError {
    /// Discovery walked up to the filesystem root without finding a manifest.
    #[error("could not find `nixpack.toml` in `{}` or any parent directory", start.display())]
    #[diagnostic(
        code(nixpack::manifest::not_found),
        help("run `nixpack init` to create one, or pass `--manifest-path PATH`")
    )]
    NotFound {
        /// Where the walk started.
        start: PathBuf,
    },

    /// `--manifest-path` named a directory.
    #[error("the manifest path `{}` is a directory, not a file", path.display())]
    #[diagnostic(
        code(nixpack::manifest::is_directory),
        help("pass the file itself: `--manifest-path {}/nixpack.toml`", path.display())
    )]
    IsDirectory {
        /// The path given.
        path: PathBuf,
    },

    /// The file exists (or was named) but could not be read.
    #[error("could not read the manifest `{}`", path.display())]
    #[diagnostic(code(nixpack::manifest::read))]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The contents are wrong; the span says where.
    #[error("{message}")]
    #[diagnostic(code(nixpack::manifest::invalid))]
    Invalid {
        /// One sentence: what is wrong.
        message: String,
        /// The manifest text, named as the user knows it (shared, which
        /// keeps the error small).
        #[source_code]
        src: Arc<NamedSource<String>>,
        /// The key or value at fault.
        #[label("{label}")]
        span: SourceSpan,
        /// Short text shown under the caret.
        label: String,
        /// What to do next.
        #[help]
        help: Option<String>,
    },
}

impl ManifestError {
    /// The 1-based line of the span, for `Invalid` errors (used by tests and
    /// by callers that want to print `file:line`).
    pub fn line(&self) -> Option<usize> {
        match self {
            ManifestError::Invalid { src, span, .. } => {
                let text = src.inner();
                let upto = span.offset().min(text.len());
                Some(text[..upto].matches('\n').count() + 1)
            }
            _ => None,
        }
    }
}
