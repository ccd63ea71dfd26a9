//! Where the entrypoint runs (`[builder] runner`).
//!
//! - **Docker** (the default): in the builder container, over the store
//!   volume; the project goes in through the Engine's archive API, the
//!   closure's description comes back through it, the NARs through the
//!   container's stdout.
//! - **Host**: the same rendered entrypoint, run by `/bin/sh` on this
//!   machine against its own Nix store (`nix-build` on PATH; the host's
//!   nix.conf, or `NIX_CONF_DIR`). The project's sent files are unpacked
//!   into a temporary folder first, so the expression sees exactly what a
//!   builder container would; the result link is kept in
//!   `.nixpack/<image>/result`, a GC root for the closure.
//!
//! Everything after the entrypoint (parsing, layers, the OCI image, every
//! sink) is the same code for both, so the same closure gives the same
//! DiffIDs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use super::builder::BuilderImage;
use super::store::Store;
use super::Ctx;
use crate::engine::{RunSpec, Upload};
use crate::error::Error;
use crate::sources::Sources;

/// The resolved runner.
pub enum Backend {
    /// The builder container and its store volume.
    Docker {
        /// The builder image.
        builder: BuilderImage,
        /// The `/nix` volume.
        store: Store,
    },
    /// This machine's Nix.
    Host {
        /// `nix-store --version`, part of the nix stage's key.
        nix_version: String,
    },
}

/// The label containers of a stage carry.
fn labels(stage: &str, image: &str) -> HashMap<String, String> {
    HashMap::from([
        ("dev.nixpack.stage".to_owned(), stage.to_owned()),
        ("dev.nixpack.image".to_owned(), image.to_owned()),
    ])
}

impl Backend {
    /// The host backend, after checking that this machine has Nix.
    pub async fn host() -> Result<Backend, Error> {
        let out = tokio::process::Command::new("nix-store")
            .arg("--version")
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => Ok(Backend::Host {
                nix_version: String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            }),
            _ => Err(Error::msg(
                "`runner = \"host\"` needs Nix on this machine, and `nix-store --version` did not run",
                "install Nix (or put nix-build and nix-store on PATH), or use `runner = \"docker\"`",
            )),
        }
    }

    /// What identifies the store and the Nix that builds into it, for the
    /// nix stage's key.
    pub fn key_part(&self) -> String {
        match self {
            // A volume removed and made again no longer holds the closure.
            Backend::Docker { builder, store } => {
                format!("docker {} {}@{}", builder.id, store.name, store.created_at)
            }
            Backend::Host { nix_version } => format!("host {nix_version}"),
        }
    }

    /// A short name for messages: the store volume or "the host's store".
    pub fn store_name(&self) -> String {
        match self {
            Backend::Docker { store, .. } => format!("the store volume `{}`", store.name),
            Backend::Host { .. } => "this machine's Nix store".to_owned(),
        }
    }

    /// Runs `entrypoint.sh build` with `env` (the `NIXPACK_*` settings of
    /// the container layout) over `sources`; fills `out` with what it
    /// writes to `NIXPACK_OUT`. Returns the exit code.
    #[allow(clippy::too_many_arguments)]
    pub async fn build(
        &self,
        ctx: &Ctx<'_>,
        image: &str,
        dir: &Path,
        env: Vec<String>,
        sources: &Arc<Sources>,
        mut on_line: impl FnMut(&str),
        out: &Path,
    ) -> Result<i64, Error> {
        match self {
            Backend::Docker { builder, store } => {
                let spec = RunSpec {
                    image: &builder.id,
                    cmd: vec!["build".into()],
                    entrypoint: None,
                    env,
                    volumes: vec![(store.name.clone(), "/nix".into())],
                    uploads: vec![Upload::Stream({
                        let sources = sources.clone();
                        Arc::new(move |b| sources.write_tar(b))
                    })],
                    labels: labels("nix", image),
                    raw_stdout: false,
                };
                ctx.engine()?
                    .run_to_completion(&spec, on_line, Some(("/nixpack/out", out)))
                    .await
                    .map_err(Error::user)
            }
            Backend::Host { .. } => {
                let script = host_script(ctx, dir)?;
                let src = crate::outputs::temp_dir(dir)
                    .map_err(|e| Error::internal("making a folder for the sources", e))?;
                let unpack_to = src.path().to_owned();
                let sources = sources.clone();
                tokio::task::spawn_blocking(move || unpack(&sources, &unpack_to))
                    .await
                    .map_err(|e| Error::internal("unpacking the sources", e))?
                    .map_err(|e| Error::internal("unpacking the sources", e))?;
                let mut env = host_env(env);
                env.push(format!(
                    "NIXPACK_SRC={}",
                    src.path().join("nixpack/src").display()
                ));
                env.push(format!("NIXPACK_OUT={}", out.display()));
                env.push(format!("NIXPACK_RESULT={}", dir.join("result").display()));
                let mut child = spawn(&script, "build", &env)?;
                let stdout = child.stdout.take().expect("piped");
                let stderr = child.stderr.take().expect("piped");
                let mut lines = merge_lines(stdout, stderr);
                while let Some(line) = lines.recv().await {
                    on_line(&line);
                }
                wait(child).await
            }
        }
    }

    /// Runs `entrypoint.sh layers` with `request` (the `nix-store --serve`
    /// input) and sends its stdout to `stdout`, its stderr lines to
    /// `on_stderr`. Returns the exit code.
    pub async fn dump(
        &self,
        ctx: &Ctx<'_>,
        image: &str,
        dir: &Path,
        request: Vec<u8>,
        stdout: tokio::sync::mpsc::Sender<Bytes>,
        mut on_stderr: impl FnMut(&str),
    ) -> Result<i64, Error> {
        match self {
            Backend::Docker { builder, store } => {
                let mut upload = tar::Builder::new(Vec::new());
                super::builder::append_bytes(&mut upload, "nixpack/plan/dump.req", &request, 0o444)
                    .map_err(|e| Error::internal("packing the layer request", e))?;
                let upload = upload
                    .into_inner()
                    .map_err(|e| Error::internal("packing the layer request", e))?;
                let spec = RunSpec {
                    image: &builder.id,
                    cmd: vec!["layers".into()],
                    entrypoint: None,
                    env: vec!["NIXPACK_DUMP=/nixpack/plan/dump.req".into()],
                    volumes: vec![(store.name.clone(), "/nix".into())],
                    uploads: vec![Upload::Bytes(upload.into())],
                    labels: labels("layers", image),
                    raw_stdout: true,
                };
                ctx.engine()?
                    .run_attached(&spec, stdout, on_stderr)
                    .await
                    .map_err(Error::user)
            }
            Backend::Host { .. } => {
                let script = host_script(ctx, dir)?;
                let mut req = crate::outputs::temp_file(dir)
                    .map_err(|e| Error::internal("writing the layer request", e))?;
                std::io::Write::write_all(&mut req, &request)
                    .map_err(|e| Error::internal("writing the layer request", e))?;
                let env = vec![format!("NIXPACK_DUMP={}", req.path().display())];
                let mut child = spawn(&script, "layers", &env)?;
                let mut out = child.stdout.take().expect("piped");
                let err = child.stderr.take().expect("piped");
                let (tx, mut err_lines) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(forward_lines(err, tx));
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    tokio::select! {
                        line = err_lines.recv() => match line {
                            Some(l) => on_stderr(&l),
                            None => break,
                        },
                        n = out.read(&mut buf) => {
                            let n = n.map_err(|e| Error::internal("reading the NARs", e))?;
                            if n == 0 {
                                break;
                            }
                            if stdout.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                                // The layer writer stopped (it says why).
                                break;
                            }
                        }
                    }
                }
                // Drain what is left of either stream.
                loop {
                    let n = out
                        .read(&mut buf)
                        .await
                        .map_err(|e| Error::internal("reading the NARs", e))?;
                    if n == 0
                        || stdout
                            .send(Bytes::copy_from_slice(&buf[..n]))
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
                drop(stdout);
                while let Some(l) = err_lines.recv().await {
                    on_stderr(&l);
                }
                let code = wait(child).await;
                drop(req);
                code
            }
        }
    }
}

/// The rendered entrypoint, written beside the image's outputs.
fn host_script(ctx: &Ctx<'_>, dir: &Path) -> Result<PathBuf, Error> {
    let path = dir.join("entrypoint.sh");
    let text = ctx.renderer.entrypoint()?;
    crate::outputs::write_atomic(&path, text.as_bytes())
        .map_err(|e| Error::internal("writing entrypoint.sh", e))?;
    Ok(path)
}

/// The container layout's settings without the paths the host replaces.
fn host_env(env: Vec<String>) -> Vec<String> {
    env.into_iter()
        .filter(|e| !e.starts_with("NIXPACK_SRC=") && !e.starts_with("NIXPACK_OUT="))
        .collect()
}

fn unpack(sources: &Sources, to: &Path) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(Vec::new());
    sources.write_tar(&mut tar)?;
    let bytes = tar.into_inner()?;
    let mut archive = tar::Archive::new(&bytes[..]);
    archive.set_preserve_permissions(true);
    archive.unpack(to)
}

fn spawn(script: &Path, cmd: &str, env: &[String]) -> Result<tokio::process::Child, Error> {
    let mut c = tokio::process::Command::new("/bin/sh");
    c.arg(script)
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Ctrl-C drops the stage's future: the entrypoint goes with it.
        .kill_on_drop(true);
    for e in env {
        if let Some((k, v)) = e.split_once('=') {
            c.env(k, v);
        }
    }
    c.spawn().map_err(|e| {
        Error::internal(
            "starting the entrypoint on the host",
            format!("{}: {e}", script.display()),
        )
    })
}

async fn wait(mut child: tokio::process::Child) -> Result<i64, Error> {
    let status = child
        .wait()
        .await
        .map_err(|e| Error::internal("waiting for the entrypoint", e))?;
    Ok(status.code().map_or(128 + 9, i64::from))
}

async fn forward_lines(
    r: impl tokio::io::AsyncRead + Unpin,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let mut lines = tokio::io::BufReader::new(r).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        if tx.send(l).is_err() {
            break;
        }
    }
}

/// Both output streams of a process as one stream of lines.
fn merge_lines(
    a: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    b: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(forward_lines(a, tx.clone()));
    tokio::spawn(forward_lines(b, tx));
    rx
}
