//! What the user sees while a command runs: progress lines per stage with
//! elapsed time, build logs unless `-q`, and a summary. One spinner per
//! image on a terminal; plain lines otherwise (CI logs, pipes).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Output settings shared by every task of a command.
#[derive(Clone)]
pub struct Ui {
    quiet: bool,
    verbose: u8,
    multi: Option<Arc<MultiProgress>>,
}

impl Ui {
    /// From `-q` / `-v`; spinners only when stderr is a terminal.
    pub fn new(quiet: bool, verbose: u8) -> Self {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| Arc::new(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())));
        Ui {
            quiet,
            verbose,
            multi,
        }
    }

    /// Whether logs are hidden.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// Verbosity (count of `-v`).
    pub fn verbose(&self) -> u8 {
        self.verbose
    }

    /// A result line on stdout (always shown; results are not chatter).
    pub fn line(&self, s: &str) {
        let print = || {
            let mut o = std::io::stdout().lock();
            // A closed pipe (`nixpack … | head`) is not an error.
            let _ = writeln!(o, "{s}");
        };
        match &self.multi {
            Some(m) => m.suspend(print),
            None => print(),
        }
    }

    /// A log line on stderr, hidden by `-q`.
    pub fn log(&self, s: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => m.suspend(|| eprintln!("{s}")),
            None => eprintln!("{s}"),
        }
    }

    /// A warning on stderr, shown even with `-q`.
    pub fn warn(&self, s: &str) {
        match &self.multi {
            Some(m) => m.suspend(|| eprintln!("{s}")),
            None => eprintln!("{s}"),
        }
    }

    /// Starts a stage for `what` (e.g. the image name).
    pub fn stage(&self, what: &str, stage: &str) -> Stage {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new_spinner());
            b.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                    .expect("valid template"),
            );
            b.set_prefix(what.to_owned());
            b.set_message(stage.to_owned());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        if bar.is_none() && !self.quiet {
            eprintln!("{what}: {stage} …");
        }
        Stage {
            ui: self.clone(),
            what: what.to_owned(),
            stage: stage.to_owned(),
            started: Instant::now(),
            bar,
        }
    }
}

/// A running stage; finish it with [`Stage::done`].
pub struct Stage {
    ui: Ui,
    what: String,
    stage: String,
    started: Instant,
    bar: Option<ProgressBar>,
}

impl Stage {
    /// Ends the stage with a short note (`cached`, `built`, …); returns
    /// its wall time.
    pub fn done(self, note: &str) -> Duration {
        let elapsed = self.started.elapsed();
        let line = format!(
            "{}: {} {} ({:.1}s)",
            self.what,
            self.stage,
            note,
            elapsed.as_secs_f64()
        );
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if !self.ui.quiet {
            self.ui.log(&line);
        }
        elapsed
    }

    /// Updates the spinner's message (e.g. the last log line).
    pub fn message(&self, msg: &str) {
        if let Some(b) = &self.bar {
            let short: String = msg.chars().take(80).collect();
            b.set_message(format!("{}: {short}", self.stage));
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM: either means "stop, clean up".
pub async fn shutdown_signal() {
    match Interrupts::install() {
        Some(mut i) => i.recv().await,
        None => std::future::pending().await,
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, counted from the moment they are
/// installed: the first asks a command to stop and clean up, a second one
/// (see [`Interrupts::or_exit`]) ends the process at once.
pub struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupts {
    /// Installs the handlers (inside a runtime); `None` if the OS refuses.
    pub fn install() -> Option<Interrupts> {
        use tokio::signal::unix::{signal, SignalKind};
        Some(Interrupts {
            int: signal(SignalKind::interrupt()).ok()?,
            term: signal(SignalKind::terminate()).ok()?,
        })
    }

    /// The next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }

    /// Runs `work` (a clean-up), unless another signal comes first: then
    /// the process exits with 130 at once, leaving the clean-up undone.
    pub async fn or_exit<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        tokio::select! {
            r = work => r,
            _ = self.recv() => {
                eprintln!("interrupted again: exiting without cleaning up");
                std::process::exit(130)
            }
        }
    }
}
