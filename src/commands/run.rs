//! `nixpack run`: start a built image with its declared ports published on
//! 127.0.0.1 (same port numbers; `-p` moves or adds one), stream its
//! output — through a terminal when stdin is one — stop and remove it when
//! it exits or on Ctrl-C, and exit with its exit code. It warns first when
//! the image is older than the project (the manifest or a project file
//! changed since the build that made it).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cli::{Publish, RunArgs};
use crate::engine::{Engine, Published, RunSpec};
use crate::error::Error;
use crate::manifest::{Image, Manifest};
use crate::ui::Ui;

/// Runs `nixpack run`.
pub fn run(manifest: Manifest, args: &RunArgs, ui: Ui) -> Result<(), Error> {
    let image = match &args.image {
        Some(n) => *manifest
            .select(std::slice::from_ref(n))
            .map_err(|m| Error::msg(m, "pass a name declared in an `[[image]]` table"))?
            .first()
            .expect("one name, one image"),
        None => &manifest.images[0],
    };
    let reference = image.reference();
    let tty = wants_tty(
        std::io::stdin().is_terminal(),
        std::io::stdout().is_terminal(),
    );
    let runtime = super::runtime()?;
    let result = runtime.block_on(async {
        let engine = Engine::connect().await.map_err(Error::user)?;
        if ui.verbose() > 0 {
            ui.log(&format!("engine: {}", engine.endpoint));
        }
        let Some(facts) = engine
            .inspect_image(&reference)
            .await
            .map_err(Error::user)?
        else {
            return Err(Error::msg(
                format!("the image `{reference}` is not built yet"),
                "run `nixpack build` first",
            ));
        };
        if let Some(warning) = staleness(&manifest, image, &facts.id) {
            ui.log(&format!(
                "warning: {reference}: {warning}; run `nixpack build` to bring it up to date"
            ));
        }
        let ports = publish(image, &args.publish);
        let spec = RunSpec {
            image: &reference,
            cmd: args.args.clone(),
            entrypoint: None,
            env: vec![],
            volumes: vec![],
            uploads: vec![],
            labels: HashMap::from([("dev.nixpack.run".to_owned(), reference.clone())]),
            raw_stdout: false,
        };
        let id = engine
            .create_container_with(&spec, &ports, tty)
            .await
            .map_err(Error::user)?;
        for p in &ports {
            ui.log(&format!(
                "{reference}: {} published on {}:{}",
                p.container, p.ip, p.host
            ));
        }
        let result = if tty {
            let _raw = RawTerminal::enter();
            let work = engine.run_tty(&id, terminal_size());
            tokio::select! {
                r = work => r.map_err(Error::user),
                _ = crate::ui::shutdown_signal() => Ok(0),
            }
        } else {
            let work = engine.start_and_wait(&id, |line| ui.line(line));
            tokio::select! {
                r = work => r.map_err(Error::user),
                // Ctrl-C is how a server is meant to be stopped: not an error.
                _ = crate::ui::shutdown_signal() => {
                    ui.log(&format!("{reference}: stopping and removing the container"));
                    Ok(0)
                }
            }
        };
        engine.remove_container(&id).await.map_err(Error::user)?;
        match result? {
            0 => Ok(()),
            code => Err(Error::exit_code_of(&reference, code)),
        }
    });
    // A terminal's stdin reader may still wait for a key: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

/// A terminal for the container exactly when both our stdin and stdout are
/// one: with a pipe on either side, a TTY would mix stderr into stdout and
/// turn `\n` into `\r\n`.
pub fn wants_tty(stdin_is_terminal: bool, stdout_is_terminal: bool) -> bool {
    stdin_is_terminal && stdout_is_terminal
}

/// The image's ports on the same numbers of 127.0.0.1, with each `-p`
/// replacing the default of its container port (or adding one).
pub fn publish(image: &Image, overrides: &[Publish]) -> Vec<Published> {
    let mut out: Vec<Published> = image
        .ports
        .iter()
        .filter(|p| !overrides.iter().any(|o| o.container == p.to_string()))
        .map(|p| Published {
            container: p.to_string(),
            ip: "127.0.0.1".into(),
            host: p.number,
        })
        .collect();
    out.extend(overrides.iter().map(|o| Published {
        container: o.container.clone(),
        ip: o.ip.clone(),
        host: o.host,
    }));
    out
}

/// Why the tagged image may not be what the project now describes, if it
/// may not: no record of the build that made it, a tag that points at
/// another image, or a manifest or project file changed since.
pub fn staleness(manifest: &Manifest, image: &Image, id: &str) -> Option<String> {
    let dir = crate::outputs::image_dir(manifest, image);
    let report = dir.join("report.json");
    let Ok(meta) = std::fs::metadata(&report) else {
        return Some("no build of it is recorded in this project (.nixpack/)".into());
    };
    let recorded = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|r| r["id"].as_str().map(str::to_owned));
    if recorded.as_deref() != Some(id) {
        return Some("the tag points at an image this project's last build did not make".into());
    }
    let built = meta.modified().ok()?;
    newer_than(&manifest.root, built).map(|p| {
        format!(
            "the image is older than the project: {} changed since it was built",
            p.strip_prefix(&manifest.root).unwrap_or(&p).display()
        )
    })
}

/// The first project file (the manifest included; not `.nixpack/`, `.git`,
/// … — what the build does not send) modified after `t`.
fn newer_than(root: &Path, t: SystemTime) -> Option<PathBuf> {
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let name = e.file_name();
            let top = d == root;
            if crate::sources::NEVER_SENT.iter().any(|n| name == *n)
                || (top && crate::sources::NEVER_SENT_TOP.iter().any(|n| name == *n))
            {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.modified().is_ok_and(|m| m > t) {
                return Some(e.path());
            }
        }
    }
    None
}

/// Rows and columns of our terminal.
fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Our terminal in raw mode (keys go to the container's terminal as they
/// are typed; it echoes), restored when dropped.
struct RawTerminal(Option<libc::termios>);

impl RawTerminal {
    fn enter() -> RawTerminal {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut t) != 0 {
                return RawTerminal(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t);
            RawTerminal(Some(saved))
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read in `enter`.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_only_when_stdin_and_stdout_are_terminals() {
        assert!(wants_tty(true, true));
        assert!(!wants_tty(true, false));
        assert!(!wants_tty(false, true));
        assert!(!wants_tty(false, false));
    }
}
